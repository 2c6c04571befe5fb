"""Metadata-only reads (``as=PartialObjectMetadataList``): Secrets listed without their data."""

from __future__ import annotations

import pytest
from kubernetes import client

LIST_FORM = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
ONE_FORM = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def _get(api_client: client.ApiClient, path: str, accept: str) -> tuple[int, dict]:
    import json

    from kubernetes.client.exceptions import ApiException

    try:
        resp = api_client.call_api(
            path, "GET", header_params={"Accept": accept}, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True,
        )  # fmt: skip
    except ApiException as exc:
        return exc.status, json.loads(exc.body)
    return resp.status, json.loads(resp.data)


def test_a_metadata_only_list_of_secrets_carries_names_and_labels_but_no_data(api_client, core, ns):
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "token", "labels": {"team": "ml"}},
            "type": "Opaque",
            "stringData": {"k": "s3cr3t"},
        },
    )
    status, listed = _get(api_client, f"/api/v1/namespaces/{ns}/secrets", LIST_FORM)

    assert status == 200 and listed["kind"] == "PartialObjectMetadataList"
    assert listed["apiVersion"] == "meta.k8s.io/v1" and listed["metadata"]["resourceVersion"]
    (item,) = listed["items"]
    assert set(item) == {"kind", "apiVersion", "metadata"} and item["kind"] == "PartialObjectMetadata"
    assert item["metadata"]["name"] == "token" and item["metadata"]["labels"] == {"team": "ml"}
    assert "s3cr3t" not in str(listed) and "czNjcjN0" not in str(listed)  # neither plain nor base64


@pytest.mark.parametrize(
    ("path", "accept", "kind"),
    [("/secrets/token", ONE_FORM, "PartialObjectMetadata"), ("/secrets/token", LIST_FORM, None),
     ("/secrets", ONE_FORM, None)],
)  # fmt: skip
def test_the_single_and_list_forms_are_only_served_where_they_fit(api_client, core, ns, path, accept, kind):
    core.create_namespaced_secret(ns, {"metadata": {"name": "token"}, "stringData": {"k": "v"}})
    status, body = _get(api_client, f"/api/v1/namespaces/{ns}{path}", accept)
    if kind:
        assert (status, body["kind"]) == (200, kind) and "data" not in body
    else:
        assert status == 406 and body["reason"] == "NotAcceptable"  # as the real API server answers
