"""A serving pod restarted after its artifact was overwritten in S3 (simulated cluster, real server process).

Before pinning, the replacement pod loaded and served whatever bytes were at the URI; now it exits 1
naming both digests and crash-loops, never turning Ready, so no traffic reaches the unregistered model.
"""

from __future__ import annotations

import sys
import time

from mlops.promotion.manifests.render import ServingSpec, deployment
from mlops.registry import ModelRegistry
from tests.harness.kubesim import LocalProcess
from tests.unit.serving.digits_artifacts import onnx_bytes, register_version

IMAGE = "ghcr.io/mlops-airflow/model-server:pinning"


def _ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _pods(kube, namespace: str) -> list[dict]:
    return kube.list("Pod", namespace, {"matchLabels": {"model": "digits", "color": "blue"}})


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_pod_restarted_after_the_artifact_was_replaced_refuses_to_serve_it(
    kube, kube_conn, s3_conn, s3_client
):
    bucket = f"pin-{kube_conn}"
    s3_client.create_bucket(Bucket=bucket)
    kube.register_image(
        IMAGE, LocalProcess(argv=[sys.executable, "-m", "mlops.serving"], env={"HOST": "127.0.0.1"})
    )
    uri = register_version(s3_client, bucket, "digits", "v1")
    digest = ModelRegistry(s3_client, bucket).get("digits", "v1")["artifact_sha256"]
    spec = ServingSpec(
        "digits",
        "blue",
        "v1",
        IMAGE,
        uri,
        kube_conn,
        replicas=1,
        readiness_period_seconds=1,
        env={"AWS_ENDPOINT_URL": s3_conn, "WARMUP_ITERATIONS": "3"},
        model_sha256=digest,
    )
    kube.create(deployment(spec))
    first = _wait(lambda: next((p for p in _pods(kube, kube_conn) if _ready(p)), None), 60, "the first pod")

    s3_client.put_object(Bucket=bucket, Key="models/digits/versions/v1/model.onnx", Body=onnx_bytes("bad"))
    kube.delete("Pod", kube_conn, first["metadata"]["name"], grace=0)

    def crashed_replacement() -> dict | None:
        for pod in _pods(kube, kube_conn):
            if pod["metadata"]["name"] == first["metadata"]["name"]:
                continue
            for status in pod.get("status", {}).get("containerStatuses", []):
                last = status.get("lastState", {}).get("terminated") or status.get("state", {}).get(
                    "terminated"
                )
                if last and last.get("exitCode") == 1:
                    return pod
        return None

    replacement = _wait(crashed_replacement, 60, "the replacement pod to exit 1")
    assert not _ready(kube.get("Pod", kube_conn, replacement["metadata"]["name"]))
    logs = "\n".join(kube.logs(kube_conn, replacement["metadata"]["name"]))
    assert f"expected sha256 {digest}" in logs and "refusing to serve" in logs, logs
