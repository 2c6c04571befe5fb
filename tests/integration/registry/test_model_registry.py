"""The model registry against the moto S3 server: entries, statuses, promotion, rollback, races."""

from __future__ import annotations

import json
import threading

import pytest

from mlops.registry import (
    ConcurrentUpdateError,
    ModelRegistry,
    RegistryError,
    VersionNotFoundError,
    artifact_uri,
)

MODEL = "digits-mlp"


def metrics(accuracy: float = 0.95, **extra) -> dict:
    return {
        "accuracy": accuracy,
        "loss": 0.2,
        "epochs": 3,
        "samples_per_second": 5000.0,
        "device": "cpu",
        "dtype": "float32",
        "peak_gpu_memory_bytes": None,
        "wall_seconds": 2.5,
        "train_size": 1437,
        "test_size": 360,
        **extra,
    }


def lineage(run_id: str = "manual__2026-11-27T02:00:00+00:00") -> dict:
    return {"dag_id": "mlops_training", "run_id": run_id, "image": "ghcr.io/mlops-airflow/trainer:0.1.0"}


@pytest.fixture
def registry(s3_client, s3_bucket) -> ModelRegistry:
    return ModelRegistry(s3_client, s3_bucket)


def register(registry: ModelRegistry, version: str, accuracy: float = 0.95) -> dict:
    return registry.register_candidate(
        MODEL,
        version,
        metrics(accuracy),
        lineage(f"run-{version}"),
        artifact_uri(registry.bucket, MODEL, version),
    )


def stored(s3_client, bucket: str, key: str) -> dict:
    return json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_registering_a_candidate_writes_its_entry_with_metrics_and_lineage(registry, s3_client, s3_bucket):
    entry = register(registry, "v1")

    on_s3 = stored(s3_client, s3_bucket, f"registry/{MODEL}/versions/v1.json")
    assert on_s3 == entry
    assert on_s3["status"] == "candidate"
    assert on_s3["metrics"]["accuracy"] == 0.95
    assert on_s3["lineage"] == lineage("run-v1")
    assert on_s3["artifact_uri"] == f"s3://{s3_bucket}/models/{MODEL}/versions/v1/"
    assert on_s3["created_at"] == on_s3["updated_at"]
    assert registry.get(MODEL, "v1") == entry
    assert registry.production(MODEL) is None


def test_registering_the_same_version_again_is_idempotent_and_refreshes_a_candidate(registry):
    first = register(registry, "v1", accuracy=0.91)
    again = register(registry, "v1", accuracy=0.91)
    assert again == first

    retried = register(registry, "v1", accuracy=0.93)  # a retried pod resumed and finished again
    assert retried["metrics"]["accuracy"] == 0.93
    assert retried["created_at"] == first["created_at"]
    assert [e["version"] for e in registry.list_versions(MODEL)] == ["v1"]


def test_a_version_registered_by_another_run_is_refused(registry):
    register(registry, "v1")
    with pytest.raises(RegistryError, match="already registered by run 'run-v1'"):
        registry.register_candidate(
            MODEL, "v1", metrics(), lineage("other-run"), artifact_uri(registry.bucket, MODEL, "v1")
        )


def test_registration_refuses_bad_metrics_and_incomplete_lineage(registry):
    uri = artifact_uri(registry.bucket, MODEL, "v1")
    with pytest.raises(ValueError, match="accuracy"):
        registry.register_candidate(MODEL, "v1", metrics(accuracy=1.5), lineage(), uri)
    with pytest.raises(ValueError, match="lineage: missing image"):
        registry.register_candidate(MODEL, "v1", metrics(), {"dag_id": "d", "run_id": "r"}, uri)
    with pytest.raises(ValueError, match="model"):
        registry.register_candidate("Bad/Name", "v1", metrics(), lineage(), uri)
    assert registry.list_versions(MODEL) == []


def test_getting_an_unregistered_version_names_it(registry):
    with pytest.raises(VersionNotFoundError, match="digits-mlp v9 is not in the registry"):
        registry.get(MODEL, "v9")


def test_promotion_moves_the_pointer_and_archives_the_previous_version(registry, s3_client, s3_bucket):
    for v in ("v1", "v2"):
        register(registry, v)

    first = registry.promote(MODEL, "v1", expected_current=None, actor="alice")
    assert first["version"] == "v1" and first["previous_version"] is None
    second = registry.promote(MODEL, "v2", expected_current="v1", actor="bob")

    pointer = stored(s3_client, s3_bucket, f"registry/{MODEL}/production.json")
    assert pointer == second == registry.production(MODEL)
    assert (pointer["version"], pointer["previous_version"], pointer["updated_by"]) == ("v2", "v1", "bob")
    assert pointer["revision"] == 2
    statuses = {e["version"]: e["status"] for e in registry.list_versions(MODEL)}
    assert statuses == {"v1": "archived", "v2": "production"}
    assert stored(s3_client, s3_bucket, f"registry/{MODEL}/versions/v1.json")["status"] == "archived"


def test_promotion_with_a_stale_expected_version_is_refused_and_changes_nothing(registry):
    for v in ("v1", "v2", "v3"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "alice")
    registry.promote(MODEL, "v2", "v1", "alice")

    with pytest.raises(ConcurrentUpdateError, match="production of digits-mlp is 'v2', expected 'v1'"):
        registry.promote(MODEL, "v3", expected_current="v1", actor="mallory")
    assert registry.production(MODEL)["version"] == "v2"
    assert registry.get(MODEL, "v3")["status"] == "candidate"


def test_an_unregistered_version_cannot_be_promoted(registry):
    with pytest.raises(VersionNotFoundError):
        registry.promote(MODEL, "v1", None, "alice")
    assert registry.production(MODEL) is None


def test_rollback_returns_to_the_previous_version_and_a_second_rollback_undoes_it(registry):
    for v in ("v1", "v2"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "alice")
    registry.promote(MODEL, "v2", "v1", "alice")

    back = registry.rollback(MODEL, actor="oncall")
    assert (back["version"], back["previous_version"], back["action"]) == ("v1", "v2", "rollback")
    assert registry.get(MODEL, "v1")["status"] == "production"
    assert registry.get(MODEL, "v2")["status"] == "archived"

    # A deliberate second rollback (it names the version it rolls back from) undoes the first.
    forward = registry.rollback(MODEL, actor="oncall-2", expected_current="v1")
    assert (forward["version"], forward["previous_version"]) == ("v2", "v1")


def test_rollback_without_a_previous_version_is_refused(registry):
    with pytest.raises(RegistryError, match="no production version"):
        registry.rollback(MODEL, "oncall")
    register(registry, "v1")
    registry.promote(MODEL, "v1", None, "alice")
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback(MODEL, "oncall")


def test_status_follows_the_pointer_even_if_a_writer_died_before_updating_entries(
    registry, s3_client, s3_bucket
):
    for v in ("v1", "v2"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "alice")
    # A promoter that moved the pointer to v2 and died before touching the entries:
    pointer_key = f"registry/{MODEL}/production.json"
    pointer = stored(s3_client, s3_bucket, pointer_key)
    s3_client.put_object(
        Bucket=s3_bucket,
        Key=pointer_key,
        Body=json.dumps({**pointer, "version": "v2", "previous_version": "v1"}),
    )
    assert stored(s3_client, s3_bucket, f"registry/{MODEL}/versions/v1.json")["status"] == "production"

    statuses = {e["version"]: e["status"] for e in registry.list_versions(MODEL)}
    assert statuses == {"v1": "archived", "v2": "production"}


@pytest.mark.parametrize("expected_current", [None, "v0"])
def test_concurrent_promotions_from_the_same_state_have_exactly_one_winner(
    registry, s3_server, s3_bucket, expected_current
):
    import boto3

    writers = 8
    versions = [f"v{i}" for i in range(1, writers + 1)]
    for v in ["v0", *versions]:
        register(registry, v)
    if expected_current:
        registry.promote(MODEL, expected_current, None, "setup")

    start = threading.Barrier(writers)
    won: list[dict] = []
    lost: list[Exception] = []
    lock = threading.Lock()

    def promote(version: str) -> None:
        client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")  # one client per writer
        mine = ModelRegistry(client, s3_bucket)
        start.wait()
        try:
            pointer = mine.promote(
                MODEL, version, expected_current=expected_current, actor=f"writer-{version}"
            )
            with lock:
                won.append(pointer)
        except ConcurrentUpdateError as exc:
            with lock:
                lost.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len(won) == 1, f"{len(won)} writers believe they promoted: {won}"
    assert len(lost) == writers - 1
    assert all("re-read and retry" in str(e) for e in lost)
    pointer = registry.production(MODEL)
    assert pointer == won[0]
    assert pointer["previous_version"] == expected_current
    assert pointer["updated_by"] == f"writer-{pointer['version']}"
    production = [e["version"] for e in registry.list_versions(MODEL) if e["status"] == "production"]
    assert production == [pointer["version"]]


def lose_the_next_pointer_response(s3_client) -> list[str]:
    """The next PutObject of a production pointer lands in S3, but its response never reaches the caller."""
    lost: list[str] = []

    def remember_key(params, context, **kwargs):
        context["key"] = params.get("Key", "")

    def drop_response(http_response, context, **kwargs):
        if (
            not lost
            and context.get("key", "").endswith("/production.json")
            and http_response.status_code == 200
        ):
            lost.append(context["key"])
            raise ConnectionResetError("connection reset while reading the PutObject response")

    s3_client.meta.events.register("provide-client-params.s3.PutObject", remember_key)
    s3_client.meta.events.register("after-call.s3.PutObject", drop_response)
    return lost


def test_a_retried_promotion_whose_first_response_was_lost_succeeds(registry, s3_server, s3_bucket):
    import boto3
    from botocore.config import Config

    for v in ("v1", "v2"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "setup")
    # No retries inside botocore: the task's retry is the one that meets the moved pointer.
    client = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    flaky = ModelRegistry(client, s3_bucket)
    lost = lose_the_next_pointer_response(client)
    with pytest.raises(ConnectionResetError):
        flaky.promote(MODEL, "v2", expected_current="v1", actor="mlops_promotion/run-7")
    assert lost and registry.production(MODEL)["version"] == "v2"  # the write landed

    # Before: ConcurrentUpdateError "production of digits-mlp is 'v2', expected 'v1'" (final).
    again = flaky.promote(MODEL, "v2", expected_current="v1", actor="mlops_promotion/run-7")
    assert (again["version"], again["previous_version"], again["revision"]) == ("v2", "v1", 2)
    assert registry.get(MODEL, "v2")["status"] == "production"
    assert registry.get(MODEL, "v1")["status"] == "archived"


def test_the_same_move_by_another_run_is_still_a_conflict(registry):
    for v in ("v1", "v2"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "setup")
    registry.promote(MODEL, "v2", "v1", "mlops_promotion/run-7")
    with pytest.raises(ConcurrentUpdateError, match="is 'v2', expected 'v1'"):
        registry.promote(MODEL, "v2", "v1", "mlops_promotion/run-8")


def test_a_retried_rollback_does_not_flip_the_pointer_back(registry):
    for v in ("v1", "v2"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "alice")
    registry.promote(MODEL, "v2", "v1", "alice")
    first = registry.rollback(MODEL, "mlops_promotion/rollback-1", expected_current="v2")
    # Before: the retry rolled back again, to v2, the version being rolled back.
    retried = registry.rollback(MODEL, "mlops_promotion/rollback-1", expected_current="v2")
    without_expectation = registry.rollback(MODEL, "mlops_promotion/rollback-1")
    assert first == retried == without_expectation == registry.production(MODEL)
    assert (first["version"], first["revision"]) == ("v1", 3)


def test_a_rollback_expecting_another_production_version_is_refused(registry):
    for v in ("v1", "v2", "v3"):
        register(registry, v)
    registry.promote(MODEL, "v1", None, "alice")
    registry.promote(MODEL, "v2", "v1", "alice")
    registry.promote(MODEL, "v3", "v2", "alice")
    with pytest.raises(ConcurrentUpdateError, match="is 'v3', expected 'v2'"):
        registry.rollback(MODEL, "oncall", expected_current="v2")
    assert registry.production(MODEL)["version"] == "v3"
