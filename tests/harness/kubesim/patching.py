"""The four PATCH flavours: JSON merge patch, JSON patch, strategic merge patch and (simplified) apply."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from .errors import ApiError, bad_request

# Patch merge keys of the list fields this simulator's kinds carry (from the Kubernetes Go types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Primitive lists whose patch strategy is "merge" (union) rather than "replace".
MERGED_PRIMITIVE_LISTS = {"finalizers"}

_DIRECTIVE_PREFIXES = ("$setElementOrder/", "$deleteFromPrimitiveList/")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict, operations: Any) -> dict:
    """RFC 6902 JSON patch; a failing ``test`` or a bad path is a 422 like the real API."""
    if not isinstance(operations, list):
        raise bad_request("json patch body must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ApiError(422, f"the server rejected our request due to an error in our request: {exc}") from exc


def _merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        dicts = [i for i in items if isinstance(i, dict)]
        return "containerPort" if any("containerPort" in i for i in dicts) else "port"
    return MERGE_KEYS.get(field)


def _is_directive(item: Any, value: str) -> bool:
    return isinstance(item, dict) and item.get("$patch") == value


def _merge_list(field: str, original: list, patch: list) -> list:
    if any(_is_directive(item, "replace") for item in patch):
        return [
            _merge_map({}, i) if isinstance(i, dict) else i for i in patch if not _is_directive(i, "replace")
        ]
    key = _merge_key(field, original + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        if field in MERGED_PRIMITIVE_LISTS:
            return list(original) + [i for i in patch if i not in original]
        return [_merge_map({}, i) if isinstance(i, dict) else i for i in patch]
    result = [copy.deepcopy(i) for i in original]
    for item in patch:
        index = next(
            (n for n, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item.get(key)),
            None,
        )
        if _is_directive(item, "delete"):
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(_merge_map({}, item))
        else:
            result[index] = _merge_map(result[index], item)
    return result


def _apply_order(values: list, order: list, key: str | None) -> list:
    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    ranked = sorted(values, key=lambda v: wanted.index(ident(v)) if ident(v) in wanted else len(wanted))
    return ranked


def _merge_map(original: dict, patch: dict) -> dict | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        original = {}
    result = dict(original)
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith(_DIRECTIVE_PREFIXES):
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, current if isinstance(current, list) else [], value)
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
        elif key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = _apply_order(result[field], value, _merge_key(field, result[field]))
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def strategic_merge_patch(target: dict, patch: Any) -> dict:
    """Strategic merge patch: object lists merge by their patch merge key; ``$patch`` directives apply."""
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch body must be a JSON object")
    return _merge_map(target, patch) or {}


def apply_patch(target: dict | None, patch: Any) -> dict:
    """Server-side apply, simplified to a strategic merge of the applied config (no field ownership)."""
    return strategic_merge_patch(target or {}, patch)


PATCH_TYPES = {
    "application/merge-patch+json": lambda t, p: merge_patch(t, p),
    "application/json-patch+json": json_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
    "application/apply-patch+yaml": apply_patch,
}
