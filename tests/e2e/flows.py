"""What the e2e tests do through the REST API, the cluster and S3, shared by their modules.

The platform loop's stages (trained, promoted, backed up) are session fixtures in
``tests/e2e/conftest.py`` built from these functions: a test asks for the stage it needs and gets it
whatever ran before it, so the loop's tests and the page's tests run alone or in any order.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

ARTIFACTS = "mlops-artifacts"
BACKUPS = "mlops-backups"
LOOP_DAG_IDS = ("mlops_training", "mlops_promotion", "mlops_rollback", "mlops_backups", "mlops_health")


def wait(what: str, probe: Callable[[], object], timeout: float, interval: float = 0.5):
    """``probe()``'s first truthy value, or an AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_state(api, dag_id: str, run_id: str) -> str | None:
    import airflow_client.client as ac

    return ac.DagRunApi(api).get_dag_run(dag_id, run_id).state


def wait_run(api, standalone, dag_id: str, run_id: str, timeout: float) -> str:
    """The run's final state; a failed run's error logs are printed (a CI failure reads from them)."""

    def done():
        state = run_state(api, dag_id, run_id)
        return state if state in ("success", "failed") else None

    try:
        state = wait(f"{dag_id} run {run_id}", done, timeout, 1)
    except AssertionError:
        raise AssertionError(
            f"{dag_id} run {run_id} did not finish; standalone log:\n{standalone.log_tail()}"
        ) from None
    if state == "failed":
        run_logs = standalone.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for log_file in sorted(run_logs.glob("task_id=*/attempt=*.log")):
            text = log_file.read_text(errors="replace")
            if '"level":"error"' in text:
                print(f"\n--- {log_file.relative_to(run_logs)} ---\n{text[-3000:]}")
    return state


def trigger(api, dag_id: str, conf: dict) -> str:
    import airflow_client.client as ac

    body = ac.TriggerDAGRunPostBody(logical_date=None, conf=conf)
    return ac.DagRunApi(api).trigger_dag_run(dag_id, body).dag_run_id


def active_runs(api) -> list[str]:
    import airflow_client.client as ac

    runs = []
    for dag_id in LOOP_DAG_IDS:
        for run in ac.DagRunApi(api).get_dag_runs(dag_id).dag_runs:
            if run.state in ("queued", "running"):
                runs.append(f"{dag_id}/{run.dag_run_id}")
    return runs


def wait_until_quiet(api, seconds: float = 8, timeout: float = 300) -> None:
    """Wait for a spell of ``seconds`` without a queued or running run of the loop's DAGs (a finished
    training run schedules a promotion a moment later: one idle poll is not enough)."""
    quiet_since: list[float] = []

    def quiet_for_a_while() -> bool:
        if active_runs(api):
            quiet_since.clear()
            return False
        quiet_since[:] = quiet_since or [time.monotonic()]
        return time.monotonic() - quiet_since[0] >= seconds

    wait("the runs in progress to finish", quiet_for_a_while, timeout, 1)


def call_service(kube, namespace: str, service: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call a Service through the API server's service proxy: (status, JSON body); 0 when unreachable."""
    url = f"{kube.url}/api/v1/namespaces/{namespace}/services/{service}/proxy{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}
    except OSError:
        return 0, {}


def register_copy(s3_client, model: str, version: str, new: str, run_id: str) -> str:
    """Register ``new``, a copy of ``version``'s artifacts, as a candidate of ``model`` (no asset event:
    nothing promotes it by itself). Returns ``new``."""
    from mlops.registry import ModelRegistry

    prefix = f"models/{model}/versions/"
    for item in s3_client.list_objects_v2(Bucket=ARTIFACTS, Prefix=f"{prefix}{version}/")["Contents"]:
        s3_client.copy_object(
            Bucket=ARTIFACTS,
            Key=item["Key"].replace(f"{prefix}{version}/", f"{prefix}{new}/"),
            CopySource={"Bucket": ARTIFACTS, "Key": item["Key"]},
        )
    registry = ModelRegistry(s3_client, ARTIFACTS)
    entry = registry.get(model, version)
    registry.register_candidate(
        model,
        new,
        entry["metrics"],
        {**entry["lineage"], "run_id": run_id},
        f"s3://{ARTIFACTS}/{prefix}{new}/",
    )
    return new


def production(s3_client, model: str) -> dict | None:
    """The registry's production pointer of ``model`` (None before its first promotion)."""
    from mlops.registry import ModelRegistry

    return ModelRegistry(s3_client, ARTIFACTS).production(model)


@dataclass
class Training:
    """The loop's REST-triggered training run: its id, the version it trains, the pod it created."""

    run_id: str
    version: str
    pod: dict
    seconds_to_pod: float
    promotion_run: str | None = None  # the mlops_promotion run that put it in production
