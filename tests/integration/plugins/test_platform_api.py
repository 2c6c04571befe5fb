"""The plugin's app as Airflow serves it: mounted by Airflow's own API app, behind its auth manager.

Airflow mounts plugin apps without authentication; these tests show that every route of ours asks
for an authenticated user, that an action needs permission to trigger the DAG it concerns
(SimpleAuthManager: a viewer may read but not trigger), and that a backend that cannot be reached
shows on the page as that backend's error.
"""

from __future__ import annotations

import os

import pytest

MODEL = "digits-page"
METRICS = {
    "accuracy": 0.93,
    "loss": 0.2,
    "epochs": 3,
    "samples_per_second": 100.0,
    "device": "cpu",
    "dtype": "float32",
    "wall_seconds": 4.0,
    "train_size": 1000,
    "test_size": 200,
}


@pytest.fixture(scope="module")
def airflow_app(airflow_db):
    """Airflow's API app (``create_app``), with the repository's plugins/ and an admin and a viewer user."""
    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,viewer:viewer"
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    with TestClient(create_app("core")) as client:
        manager = get_auth_manager()
        tokens = {
            role: manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role))
            for role in ("admin", "viewer")
        }
        yield client, tokens


@pytest.fixture
def registry_bucket(monkeypatch, s3_conn, s3_bucket, s3_client):
    """The artifacts bucket of this test, through the real aws_default connection (moto over HTTP)."""
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", s3_bucket)
    from mlops_platform_ui import fetch

    fetch.forget()
    from mlops.registry import ModelRegistry

    registry = ModelRegistry(s3_client, s3_bucket)
    lineage = {"dag_id": "mlops_training", "run_id": "manual__page", "image": "trainer:t"}
    registry.register_candidate(
        MODEL, "v1", METRICS, lineage, f"s3://{s3_bucket}/models/{MODEL}/versions/v1/"
    )
    return s3_bucket


def _auth(tokens, role):
    return {"Authorization": f"Bearer {tokens[role]}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/mlops/ui/"),
        ("GET", "/mlops/api/state"),
        ("GET", f"/mlops/api/models/{MODEL}"),
        ("POST", f"/mlops/api/models/{MODEL}/promote"),
        ("POST", f"/mlops/api/models/{MODEL}/rollback"),
        ("POST", "/mlops/api/silences"),
        ("POST", "/mlops/api/silences/abc/expire"),
        ("POST", "/mlops/api/training"),
        ("GET", "/mlops/ui/runs/mlops_training/r1/model-card"),
        ("GET", "/mlops/ui/runs/mlops_promotion/r1/promotion"),
    ],
)
def test_every_route_answers_401_to_an_anonymous_request(airflow_app, method, path):
    client, _ = airflow_app
    answer = client.request(method, path, json={})
    assert answer.status_code == 401, answer.text


def test_the_sub_apps_docs_and_openapi_are_off(airflow_app):
    client, tokens = airflow_app
    for path in ("/mlops/docs", "/mlops/redoc", "/mlops/openapi.json"):
        assert client.get(path, headers=_auth(tokens, "admin")).status_code == 404, path


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/mlops/api/models/{MODEL}/promote", {"version": "v1"}),
        (f"/mlops/api/models/{MODEL}/rollback", {"reason": "bad answers"}),
        ("/mlops/api/training", {"conf": {"model_name": MODEL}}),
        ("/mlops/api/silences", {"matcher": MODEL, "minutes": 5, "comment": "switching"}),
        ("/mlops/api/silences/abc/expire", {}),
    ],
)
def test_a_viewer_is_refused_every_action_with_403(airflow_app, registry_bucket, path, body):
    client, tokens = airflow_app
    answer = client.post(path, json=body, headers=_auth(tokens, "viewer"))
    assert answer.status_code == 403, answer.text


def test_a_viewer_reads_the_model_the_registry_holds(airflow_app, registry_bucket):
    client, tokens = airflow_app
    answer = client.get(f"/mlops/api/models/{MODEL}", headers=_auth(tokens, "viewer"))
    assert answer.status_code == 200, answer.text
    state = answer.json()
    assert state["production"] is None
    assert [(c["version"], c["accuracy"], c["run_id"]) for c in state["candidates"]] == [
        ("v1", 0.93, "manual__page")
    ]


def test_an_unknown_model_is_a_404_naming_it(airflow_app, registry_bucket):
    client, tokens = airflow_app
    for path, body in (
        ("/mlops/api/models/no-such-model/promote", {"version": "v1"}),
        ("/mlops/api/models/no-such-model/rollback", {"reason": "why"}),
    ):
        answer = client.post(path, json=body, headers=_auth(tokens, "admin"))
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == "model 'no-such-model' is not in the registry"
    answer = client.get("/mlops/api/models/no-such-model", headers=_auth(tokens, "viewer"))
    assert answer.status_code == 404


def test_an_unregistered_version_is_a_404_and_a_bad_body_a_422(airflow_app, registry_bucket):
    client, tokens = airflow_app
    answer = client.post(
        f"/mlops/api/models/{MODEL}/promote", json={"version": "v9"}, headers=_auth(tokens, "admin")
    )
    assert answer.status_code == 404, answer.text
    assert "v9 is not in the registry" in answer.json()["detail"]
    answer = client.post(
        f"/mlops/api/models/{MODEL}/promote", json={"version": "Bad Version!"}, headers=_auth(tokens, "admin")
    )
    assert answer.status_code == 422


def test_rollback_without_a_previous_version_is_refused_with_the_reason(airflow_app, registry_bucket):
    client, tokens = airflow_app
    answer = client.post(
        f"/mlops/api/models/{MODEL}/rollback", json={"reason": "bad"}, headers=_auth(tokens, "admin")
    )
    assert answer.status_code == 409
    assert answer.json()["detail"] == f"{MODEL} has no previous production version to return to"


def test_an_unreachable_s3_shows_on_the_page_as_that_backends_error(airflow_app, monkeypatch):
    from mlops_platform_ui import fetch

    from mlops.dev.connections import connections_env, load_dev_connections
    from mlops.dev.ports import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    for key, value in connections_env(load_dev_connections({"S3_ENDPOINT": closed})).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    fetch.forget()
    client, tokens = airflow_app
    answer = client.get("/mlops/ui/", headers=_auth(tokens, "viewer"))
    assert answer.status_code == 200
    page = answer.text
    assert '<p class="error" data-testid="error-registry">registry: ' in page
    assert '<p class="error" data-testid="error-backups">backups: ' in page
    assert '<p class="error" data-testid="error-health">health: ' in page
    assert "ML platform" in page
    fetch.forget()
