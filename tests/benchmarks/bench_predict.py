"""Benchmarks of model serving and promotion.

Run: `.venv/bin/python -m pytest tests/benchmarks/bench_predict.py -s` (about 1.5 min; needs `wrk`).

1. ``/predict`` of the real model server (``python -m mlops.serving``, one process, model from moto S3)
   under load from ``wrk`` (Debian package ``wrk``: a C load generator, so the client does not eat
   the server's CPU the way a Python generator would on a 2-core machine), at 1 connection
   (latency) and 8 connections (throughput). Baseline, in the same run: the same model called
   in-process (``OnnxModel.predict``), and the in-process handler path (JSON parse + validation +
   predict + JSON encode) to show where the HTTP overhead goes.
2. "Candidate ready" -> "traffic switched", beyond the analysis: the blue-green steps against the
   simulated Kubernetes API with real model-server pods (target <= 1 s).

Figures are printed; the assertions only catch a broken setup, not a slow machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mlops.dev.ports import free_port
from mlops.promotion import bluegreen, gates
from mlops.serving.model import OnnxModel, parse_instances
from tests.unit.serving.digits_artifacts import held_out, onnx_bytes, register_version, upload_version

WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {"p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)]}


def _in_process(fn, seconds: float = 3.0) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - started)
    return {**_percentiles(latencies), "rps": len(latencies) / sum(latencies)}


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, body: str, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{WRK_SECONDS}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=WRK_SECONDS + 30,
        ).stdout
    finally:
        os.unlink(script.name)
    assert "Non-2xx" not in out, out
    figures = {}
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        figures[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    figures["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return figures


def _row(name: str, f: dict[str, float], base: dict[str, float] | None = None) -> str:
    line = f"{name:<42} p50 {f['p50_ms']:8.3f} ms  p99 {f['p99_ms']:8.3f} ms  {f['rps']:9.0f} req/s"
    if base:
        line += (
            f"   x{f['p50_ms'] / base['p50_ms']:.1f} p50, x{f['p99_ms'] / base['p99_ms']:.1f} p99, "
            f"{f['rps'] / base['rps']:.2f} of throughput"
        )
    return line


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_predict_under_wrk_against_the_same_model_in_process(s3_server, s3_client, s3_bucket):
    uri = upload_version(s3_client, s3_bucket, "digits", "bench")
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "AWS_ENDPOINT_URL": s3_server,
        "MODEL_NAME": "digits",
        "MODEL_VERSION": "bench",
        "MODEL_URI": uri,
        "LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, "-m", "mlops.serving"], env=env)
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        inputs, _ = held_out(32)
        model = OnnxModel(onnx_bytes())
        model.warm_up()
        print(
            f"\n/predict on {os.cpu_count()} cores, wrk -t1 for {WRK_SECONDS} s per row; "
            "ratios are against the in-process call of the same model"
        )
        for rows in (1, 32):
            body = json.dumps({"instances": inputs[:rows]})
            batch = np.asarray(inputs[:rows], dtype=np.float32)
            base = _in_process(lambda b=batch: model.predict(b))
            handler = _in_process(
                lambda b=body: json.dumps(model.predict(parse_instances(json.loads(b), 1024)).__dict__)
            )
            single = _wrk(f"http://127.0.0.1:{port}/predict", body, 1)
            loaded = _wrk(f"http://127.0.0.1:{port}/predict", body, 8)
            print(_row(f"in-process OnnxModel.predict, batch {rows}", base))
            print(_row(f"in-process parse+predict+encode, batch {rows}", handler, base))
            print(_row(f"HTTP /predict, 1 connection, batch {rows}", single, base))
            print(_row(f"HTTP /predict, 8 connections, batch {rows}", loaded, base))
            assert single["rps"] > 0 and loaded["rps"] > 0
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_candidate_ready_to_traffic_switched_beyond_the_analysis(
    kube, kube_conn, s3_conn, s3_client, monkeypatch
):
    from mlops.promotion.manifests.render import ServingSpec
    from mlops.registry import ModelRegistry
    from tests.harness.kubesim import LocalProcess

    bucket = f"bench-{kube_conn}"
    s3_client.create_bucket(Bucket=bucket)
    image = "ghcr.io/mlops-airflow/model-server:bench"
    kube.register_image(
        image,
        LocalProcess(
            argv=[sys.executable, "-m", "mlops.serving"], env={"HOST": "127.0.0.1", "LOG_LEVEL": "warning"}
        ),
    )
    registry = ModelRegistry(s3_client, bucket)
    cluster = bluegreen.Cluster.from_connection()
    limits = gates.Gates()
    timings = []
    previous = None
    for i in range(1, 6):
        version = f"v{i}"
        uri = register_version(s3_client, bucket, "digits", version)
        holder = f"bench/{version}"
        state = bluegreen.resolve_active_color(cluster, "digits", holder)
        spec = ServingSpec(
            "digits",
            state["candidate_color"],
            version,
            image,
            uri,
            kube_conn,
            replicas=1,
            readiness_period_seconds=1,
            env={"AWS_ENDPOINT_URL": s3_conn},
        )
        deployed = bluegreen.deploy_candidate(cluster, spec, holder)
        bluegreen.wait_for_rollout(cluster, deployed["deployment"], version, deployed["generation"], 60, 0.05)
        ready = time.perf_counter()  # "candidate ready": the rollout is seen complete
        client = gates.ProxyServiceClient(cluster.api_client, kube_conn, "digits-preview")
        samples = gates.load_samples(s3_client, uri)
        report = gates.pre_promotion(
            client, "digits", version, samples, 0.95, 0.95 if previous else None, limits
        ).raise_if_failed()
        bluegreen.switch_traffic(
            cluster, "digits", state["candidate_color"], state["active_color"], version, holder
        )
        switched = time.perf_counter()
        registry.promote("digits", version, previous, holder)
        bluegreen.scale_down(cluster, "digits", state["active_color"], 0, holder=holder)
        bluegreen.release_lease(cluster, "digits", holder)
        previous = version
        timings.append(
            {
                "total": switched - ready,
                "analysis": report.seconds,
                "beyond": switched - ready - report.seconds,
            }
        )
    beyond = [t["beyond"] for t in timings]
    print(f"\ncandidate ready -> traffic switched, {len(timings)} promotions (kubesim + real model servers):")
    print(f"  total           median {1000 * statistics.median(t['total'] for t in timings):7.1f} ms")
    print(
        f"  analysis        median {1000 * statistics.median(t['analysis'] for t in timings):7.1f} ms "
        "(ready, version, 64 smoke predictions, quality gate)"
    )
    print(
        f"  beyond analysis median {1000 * statistics.median(beyond):7.1f} ms, "
        f"max {1000 * max(beyond):.1f} ms (target <= 1000 ms)"
    )
    assert max(beyond) < 5


if __name__ == "__main__":
    sys.exit(pytest.main([str(Path(__file__)), "-s", "-p", "no:cacheprovider"]))
