"""Metadata-only reads: ``Accept: application/json;as=PartialObjectMetadata(List);g=meta.k8s.io;v=v1``.

What the API server does (Kubernetes API concepts, "Receiving resources as
PartialObjectMetadata"; k8s.io/apiserver/pkg/endpoints/handlers/response.go,
``transformObject``/``asPartialObjectMetadataList``): a list answers a
``PartialObjectMetadataList`` whose items carry only ``kind``, ``apiVersion`` and
``metadata`` (no ``spec``, ``data``, ``type``...); a single object answers a
``PartialObjectMetadata``. Asking a list for the single form, or an object for the
list form, is refused with 406 Not Acceptable, as the real server does.
"""

from __future__ import annotations

from .errors import ApiError

GROUP_VERSION = "meta.k8s.io/v1"


def _partial(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": GROUP_VERSION, "metadata": obj.get("metadata", {})}


def partial_metadata(plain: dict, items: list[dict], resource_version: str, accept: str) -> dict:
    """The metadata-only form of a list (``plain`` is a ``...List``) or of one object."""
    is_list = str(plain.get("kind", "")).endswith("List") and "items" in plain
    wants_list = "as=PartialObjectMetadataList" in accept
    if is_list != wants_list:
        raise ApiError(
            406,
            f"only the following media types are accepted: application/json;as="
            f"{'PartialObjectMetadataList' if is_list else 'PartialObjectMetadata'};g=meta.k8s.io;v=v1",
            "NotAcceptable",
        )
    if not is_list:
        return _partial(plain)
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": GROUP_VERSION,
        "metadata": {"resourceVersion": resource_version},
        "items": [_partial(obj) for obj in items],
    }
