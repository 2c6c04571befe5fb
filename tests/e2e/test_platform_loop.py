"""The whole platform loop, driven as an external system would: the REST API through the official client.

train (REST, conf) -> pod on the cluster -> candidate in the registry -> asset-triggered promotion ->
traffic on the new version -> backups verified -> a stopped model server pages once and resolves once.

The steps share one standalone Airflow and one simulated cluster, so they run in file order and
each builds on the one before. Figures for the closing note are printed with a ``[figure]`` prefix.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    E2E_NAMESPACE,
    LOOP_MODEL,
    PLATFORM_DB,
    SERVING_NAMESPACE,
    TRAINER_IMAGE,
    wait_for_dag,
)

pytestmark = pytest.mark.e2e
LOOP: dict = {}  # what each step hands to the next


def _wait(what: str, probe: Callable[[], object], timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _run_state(api, dag_id: str, run_id: str) -> str | None:
    import airflow_client.client as ac

    return ac.DagRunApi(api).get_dag_run(dag_id, run_id).state


def _wait_run(api, standalone, dag_id: str, run_id: str, timeout: float) -> str:
    def done():
        state = _run_state(api, dag_id, run_id)
        return state if state in ("success", "failed") else None

    try:
        state = _wait(f"{dag_id} run {run_id}", done, timeout, 1)
    except AssertionError:
        raise AssertionError(
            f"{dag_id} run {run_id} did not finish; standalone log:\n{standalone.log_tail()}"
        ) from None
    if state == "failed":  # say which task failed and why, so a CI failure can be read from its output
        run_logs = standalone.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for log_file in sorted(run_logs.glob("task_id=*/attempt=*.log")):
            text = log_file.read_text(errors="replace")
            if '"level":"error"' in text:
                print(f"\n--- {log_file.relative_to(run_logs)} ---\n{text[-3000:]}")
    return state


def _trigger(api, dag_id: str, conf: dict) -> str:
    import airflow_client.client as ac

    return (
        ac.DagRunApi(api)
        .trigger_dag_run(dag_id, ac.TriggerDAGRunPostBody(logical_date=None, conf=conf))
        .dag_run_id
    )


def _service(kube, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call the loop model's active Service through the API server's service proxy."""
    url = f"{kube.url}/api/v1/namespaces/{SERVING_NAMESPACE}/services/{LOOP_MODEL}/proxy{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}
    except OSError:
        return 0, {}


class _PeakMemory:
    """Samples the proportional set size of the whole stack: this process plus standalone's process group."""

    def __init__(self, standalone_pid: int) -> None:
        self.sid = os.getsid(standalone_pid)
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pss_kb(self, pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> float:
        """PSS in MB of this process (harness servers), standalone's session and this process's
        children (the simulated cluster's trainer and model-server processes)."""
        me = os.getpid()
        pids = {me}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if os.getsid(pid) == self.sid or parent == me:
                    pids.add(pid)
            except (OSError, ValueError, IndexError):
                continue
        return sum(self._pss_kb(pid) for pid in pids) / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.sample())
            self._stop.wait(1)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def loop_clock(standalone):
    started = time.monotonic()
    with _PeakMemory(standalone.proc.pid) as memory:
        yield memory
    print(f"\n[figure] full loop wall time: {time.monotonic() - started:.1f} s")
    print(f"[figure] peak memory of the stack (PSS, Airflow + harness + pods): {memory.peak_mb:.0f} MB")


DAG_IDS = ("mlops_training", "mlops_promotion", "mlops_rollback", "mlops_backups", "mlops_health")


def _active_runs(api) -> list[str]:
    import airflow_client.client as ac

    runs = []
    for dag_id in DAG_IDS:
        for run in ac.DagRunApi(api).get_dag_runs(dag_id).dag_runs:
            if run.state in ("queued", "running"):
                runs.append(f"{dag_id}/{run.dag_run_id}")
    return runs


def test_1_dags_are_unpaused_through_the_api(api, loop_clock):
    for dag_id in DAG_IDS:
        wait_for_dag(api, dag_id)
    # Unpausing starts each schedule's latest run (catchup is off). Let them finish, so the
    # trigger latency below is measured on an idle scheduler, as a caller would usually meet it.
    # A finished training run schedules a promotion a moment later: wait for a quiet spell, not one poll.
    quiet_since: list[float] = []

    def quiet_for_a_while() -> bool:
        if _active_runs(api):
            quiet_since.clear()
            return False
        quiet_since[:] = quiet_since or [time.monotonic()]
        return time.monotonic() - quiet_since[0] >= 8

    _wait("the scheduled runs started by unpausing to finish", quiet_for_a_while, 300, 1)


def test_2_a_rest_triggered_training_run_creates_the_pod_the_conf_describes(api, kube, loop_clock):
    conf = {
        "model_name": LOOP_MODEL,
        "epochs": 4,
        "batch_size": 32,
        "learning_rate": 0.01,
        "compute_profile": "gpu-small",
        "gpus": 2,
        "image": TRAINER_IMAGE,
        "seed": 7,
        "promote": True,  # a REST-triggered run is promoted only when it asks
    }
    started = time.monotonic()
    run_id = _trigger(api, "mlops_training", conf)

    def pod_post():
        for request in kube.requests_matching("POST", rf"/namespaces/{E2E_NAMESPACE}/pods$"):
            if {"name": "RUN_ID", "value": run_id} in request.body["spec"]["containers"][0]["env"]:
                return request
        return None

    post = _wait("the training pod's POST", pod_post, 60, 0.05)
    print(f"\n[figure] REST trigger -> pod POST at the Kubernetes API: {time.monotonic() - started:.2f} s")
    LOOP["training_run"] = run_id

    pod = post.body
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_NAME"] == LOOP_MODEL
    assert env["ARTIFACT_URI"].startswith(f"s3://mlops-artifacts/models/{LOOP_MODEL}/versions/")
    assert container["args"][:6] == ["--epochs", "4", "--learning-rate", "0.01", "--batch-size", "32"]
    args = container["args"]
    assert args[args.index("--seed") + 1] == "7"
    assert (
        container["resources"]["requests"]["nvidia.com/gpu"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
        == "2"
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
    }
    assert set(secret_refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    LOOP["version"] = env["MODEL_VERSION"]


def test_3_training_succeeds_and_registers_the_candidate(api, standalone, s3_client, loop_clock):
    assert _wait_run(api, standalone, "mlops_training", LOOP["training_run"], 240) == "success"
    key = f"registry/{LOOP_MODEL}/versions/{LOOP['version']}.json"
    entry = json.loads(s3_client.get_object(Bucket="mlops-artifacts", Key=key)["Body"].read())
    assert entry["lineage"]["run_id"] == LOOP["training_run"]
    assert entry["metrics"]["accuracy"] >= 0.85


def test_4_the_asset_triggered_promotion_switches_traffic_to_the_new_version(
    api, standalone, kube, s3_client, loop_clock
):
    # The candidate's asset event schedules mlops_promotion; its answers now come from the new version.
    def serving_new_version():
        status, body = _service(kube, "/version")
        return status == 200 and body.get("model_version") == LOOP["version"]

    _wait("the active Service to answer from the new version", serving_new_version, 240, 1)
    samples = json.loads(
        s3_client.get_object(
            Bucket="mlops-artifacts", Key=f"models/{LOOP_MODEL}/versions/{LOOP['version']}/samples.json"
        )["Body"].read()
    )
    inputs = [sample["input"] for sample in samples["samples"][:4]]
    status, prediction = _service(kube, "/predict", {"instances": inputs})
    assert status == 200 and len(prediction["predictions"]) == 4
    assert prediction["model_version"] == LOOP["version"]

    def promotion_done():
        pointer = s3_client.get_object(Bucket="mlops-artifacts", Key=f"registry/{LOOP_MODEL}/production.json")
        return json.loads(pointer["Body"].read())["version"] == LOOP["version"]

    def pointer_moved():
        try:
            return promotion_done()
        except s3_client.exceptions.NoSuchKey:
            return False

    _wait("the registry's production pointer to move", pointer_moved, 240, 1)


def test_5_backups_run_and_write_the_verified_marker(api, standalone, s3_client, loop_clock):
    run_id = _trigger(api, "mlops_backups", {"artifacts": True, "kubernetes": True, "postgres": True})
    assert _wait_run(api, standalone, "mlops_backups", run_id, 300) == "success"
    marker = json.loads(
        s3_client.get_object(
            Bucket="mlops-backups", Key=f"_markers/postgres/{PLATFORM_DB}/last_verified.json"
        )["Body"].read()
    )
    assert marker["database"] == PLATFORM_DB
    assert marker["tables"]["public.runs"] == 500 or marker["tables"].get("runs") == 500


def _health_events(pagerduty) -> list[dict]:
    return [
        b for b in pagerduty.bodies("/v2/enqueue") if str(b.get("dedup_key", "")).startswith("mlops-health/")
    ]


def test_6_a_stopped_model_server_pages_once_and_resolves_once(api, standalone, kube, _pagerduty, loop_clock):
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
    service = kube.get("Service", SERVING_NAMESPACE, LOOP_MODEL)
    active = f"{LOOP_MODEL}-{service['spec']['selector']['color']}"
    apps.patch_namespaced_deployment_scale(active, SERVING_NAMESPACE, {"spec": {"replicas": 0}})
    _wait("the model server to stop answering", lambda: _service(kube, "/ready")[0] != 200, 60)

    def health_run():
        run_id = _trigger(api, "mlops_health", {})
        _wait_run(api, standalone, "mlops_health", run_id, 180)

    for _ in range(3):  # failures_before_alert is 2: the second run pages, the third must not page again
        health_run()
    triggers = [e for e in _health_events(_pagerduty) if e["event_action"] == "trigger"]
    assert len(triggers) == 1, triggers
    assert triggers[0]["payload"]["severity"] == "critical"

    apps.patch_namespaced_deployment_scale(active, SERVING_NAMESPACE, {"spec": {"replicas": 1}})
    _wait("the model server to be ready again", lambda: _service(kube, "/ready")[0] == 200, 120)
    health_run()
    health_run()
    events = _health_events(_pagerduty)
    resolves = [e for e in events if e["event_action"] == "resolve"]
    assert len(resolves) == 1, events
    assert resolves[0]["dedup_key"] == triggers[0]["dedup_key"]
    assert len([e for e in events if e["event_action"] == "trigger"]) == 1


def test_7_a_promotion_waiting_for_approval_switches_traffic_only_once_approved(
    api, standalone, kube, s3_client, loop_clock
):
    import airflow_client.client as ac

    from mlops.registry import ModelRegistry

    # A second version of the loop model, registered without an asset event (its artifacts are a copy).
    old, new = LOOP["version"], f"{LOOP['version']}-approval"
    prefix = f"models/{LOOP_MODEL}/versions/"
    for item in s3_client.list_objects_v2(Bucket="mlops-artifacts", Prefix=prefix + old + "/")["Contents"]:
        target = item["Key"].replace(f"{prefix}{old}/", f"{prefix}{new}/")
        s3_client.copy_object(
            Bucket="mlops-artifacts", Key=target, CopySource={"Bucket": "mlops-artifacts", "Key": item["Key"]}
        )
    registry = ModelRegistry(s3_client, "mlops-artifacts")
    entry = registry.get(LOOP_MODEL, old)
    registry.register_candidate(
        LOOP_MODEL,
        new,
        entry["metrics"],
        {**entry["lineage"], "run_id": "e2e-approval"},
        f"s3://mlops-artifacts/{prefix}{new}/",
    )

    run_id = _trigger(
        api,
        "mlops_promotion",
        {
            "model": LOOP_MODEL,
            "version": new,
            "auto_promote": False,
            "analysis_duration_seconds": 2,
            "scale_down_delay_seconds": 0,
        },
    )
    instances = ac.TaskInstanceApi(api)

    def awaiting_approval():
        try:
            return instances.get_hitl_detail("mlops_promotion", run_id, "approve_promotion", -1)
        except ac.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    _wait("the approval request in Required actions", awaiting_approval, 240, 1)
    status, body = _service(kube, "/version")
    assert (status, body.get("model_version")) == (200, old), "traffic switched before the approval"

    instances.update_hitl_detail(
        "mlops_promotion",
        run_id,
        "approve_promotion",
        -1,
        ac.UpdateHITLDetailPayload(chosen_options=["Approve"]),
    )
    assert _wait_run(api, standalone, "mlops_promotion", run_id, 240) == "success"
    status, body = _service(kube, "/version")
    assert (status, body.get("model_version")) == (200, new)
    assert registry.production(LOOP_MODEL)["version"] == new
