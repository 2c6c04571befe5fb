"""The whole platform loop, driven as an external system would: the REST API through the official client.

train (REST, conf) -> pod on the cluster -> candidate in the registry -> asset-triggered promotion ->
traffic on the new version -> backups verified -> a stopped model server pages once and resolves once.

The steps share one standalone Airflow and one simulated cluster. Each test asks for the stage of
the loop it needs (``loop_training``, ``loop_promoted``, ... in ``tests/e2e/conftest.py``), which is
built once per session whatever ran before: any test here runs alone or in any order. Figures for the
closing note are printed with a ``[figure]`` prefix.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import LOOP_MODEL, PLATFORM_DB, SERVING_NAMESPACE, TRAINER_IMAGE
from tests.e2e.flows import (
    LOOP_DAG_IDS,
    call_service,
    production,
    register_copy,
    trigger,
    wait,
    wait_run,
)

pytestmark = pytest.mark.e2e


def _service(kube, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call the loop model's active Service through the API server's service proxy."""
    return call_service(kube, SERVING_NAMESPACE, LOOP_MODEL, path, body)


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


def test_1_dags_are_unpaused_through_the_api(api, loop_unpaused, loop_clock):
    import airflow_client.client as ac

    for dag_id in LOOP_DAG_IDS:
        assert ac.DAGApi(api).get_dag(dag_id).is_paused is False, dag_id


def test_2_a_rest_triggered_training_run_creates_the_pod_the_conf_describes(loop_training, loop_clock):
    print(f"\n[figure] REST trigger -> pod POST at the Kubernetes API: {loop_training.seconds_to_pod:.2f} s")
    pod = loop_training.pod
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_NAME"] == LOOP_MODEL and env["MODEL_VERSION"] == loop_training.version
    assert env["ARTIFACT_URI"].startswith(f"s3://mlops-artifacts/models/{LOOP_MODEL}/versions/")
    assert container["image"] == TRAINER_IMAGE
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


def test_3_training_succeeds_and_registers_the_candidate(loop_trained, s3_client, loop_clock):
    key = f"registry/{LOOP_MODEL}/versions/{loop_trained.version}.json"
    entry = json.loads(s3_client.get_object(Bucket="mlops-artifacts", Key=key)["Body"].read())
    assert entry["lineage"]["run_id"] == loop_trained.run_id
    assert entry["metrics"]["accuracy"] >= 0.85


def test_4_the_asset_triggered_promotion_switches_traffic_to_the_new_version(
    api, standalone, loop_promoted, kube, s3_client, loop_clock
):
    import airflow_client.client as ac

    # loop_promoted waited until the active Service answered from the trained version and the
    # registry's pointer named it; the run that moved the pointer was scheduled by the asset event.
    # (The pointer moves before the run's scale-down and clean-up: wait for the run to end.)
    run_id = loop_promoted.promotion_run
    assert wait_run(api, standalone, "mlops_promotion", run_id, 240) == "success"
    assert ac.DagRunApi(api).get_dag_run("mlops_promotion", run_id).run_type == "asset_triggered"
    # Predictions go through the active Service to the version that serves now (the trained one,
    # unless a later test promoted another).
    serving = production(s3_client, LOOP_MODEL)["version"]
    samples = json.loads(
        s3_client.get_object(
            Bucket="mlops-artifacts", Key=f"models/{LOOP_MODEL}/versions/{serving}/samples.json"
        )["Body"].read()
    )
    inputs = [sample["input"] for sample in samples["samples"][:4]]
    status, prediction = _service(kube, "/predict", {"instances": inputs})
    assert status == 200 and len(prediction["predictions"]) == 4
    assert prediction["model_version"] == serving


def test_5_backups_run_and_write_the_verified_marker(api, standalone, s3_client, loop_unpaused, loop_clock):
    run_id = trigger(api, "mlops_backups", {"artifacts": True, "kubernetes": True, "postgres": True})
    assert wait_run(api, standalone, "mlops_backups", run_id, 300) == "success"
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


def test_6_a_stopped_model_server_pages_once_and_resolves_once(
    api, standalone, kube, _pagerduty, loop_promoted, loop_clock
):
    from kubernetes import client

    apps = client.AppsV1Api(kube.admin_api_client())
    service = kube.get("Service", SERVING_NAMESPACE, LOOP_MODEL)
    active = f"{LOOP_MODEL}-{service['spec']['selector']['color']}"
    apps.patch_namespaced_deployment_scale(active, SERVING_NAMESPACE, {"spec": {"replicas": 0}})
    wait("the model server to stop answering", lambda: _service(kube, "/ready")[0] != 200, 60)

    def health_run():
        run_id = trigger(api, "mlops_health", {})
        wait_run(api, standalone, "mlops_health", run_id, 180)

    for _ in range(3):  # failures_before_alert is 2: the second run pages, the third must not page again
        health_run()
    triggers = [e for e in _health_events(_pagerduty) if e["event_action"] == "trigger"]
    assert len(triggers) == 1, triggers
    assert triggers[0]["payload"]["severity"] == "critical"

    apps.patch_namespaced_deployment_scale(active, SERVING_NAMESPACE, {"spec": {"replicas": 1}})
    wait("the model server to be ready again", lambda: _service(kube, "/ready")[0] == 200, 120)
    health_run()
    health_run()
    events = _health_events(_pagerduty)
    resolves = [e for e in events if e["event_action"] == "resolve"]
    assert len(resolves) == 1, events
    assert resolves[0]["dedup_key"] == triggers[0]["dedup_key"]
    assert len([e for e in events if e["event_action"] == "trigger"]) == 1


def test_7_a_promotion_waiting_for_approval_switches_traffic_only_once_approved(
    api, standalone, kube, s3_client, loop_promoted, loop_clock
):
    import airflow_client.client as ac

    # A second version of the loop model, registered without an asset event (its artifacts are a copy).
    old = production(s3_client, LOOP_MODEL)["version"]
    new = register_copy(s3_client, LOOP_MODEL, old, f"{old[:40]}-approval", "e2e-approval")
    run_id = trigger(
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

    wait("the approval request in Required actions", awaiting_approval, 240, 1)
    status, body = _service(kube, "/version")
    assert (status, body.get("model_version")) == (200, old), "traffic switched before the approval"

    instances.update_hitl_detail(
        "mlops_promotion",
        run_id,
        "approve_promotion",
        -1,
        ac.UpdateHITLDetailPayload(chosen_options=["Approve"]),
    )
    assert wait_run(api, standalone, "mlops_promotion", run_id, 240) == "success"
    status, body = _service(kube, "/version")
    assert (status, body.get("model_version")) == (200, new)
    assert production(s3_client, LOOP_MODEL)["version"] == new
