"""`python -m mlops.serving` as a real process: loads from S3, serves, and shuts down gracefully."""

from __future__ import annotations

import json
import signal
import socket
import time

import httpx
import pytest

from tests.integration.serving.server_process import start_server, stop, wait_ready
from tests.unit.serving.digits_artifacts import held_out, upload_version


@pytest.fixture
def server(s3_server, s3_client, s3_bucket):
    proc, url = start_server(s3_server, upload_version(s3_client, s3_bucket, "digits", "v1"))
    try:
        wait_ready(proc, url)
        yield proc, url
    finally:
        stop(proc)


def test_sigterm_finishes_the_in_flight_request_then_exits_0(server):
    proc, url = server
    inputs, _ = held_out(8)
    body = json.dumps({"instances": inputs}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # The request is in flight: headers and half of the body sent when SIGTERM arrives.
        conn.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(f"{url}/health", timeout=1)
        conn.sendall(body[len(body) // 2 :])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(json.loads(payload)["predictions"]) == 8
    assert proc.wait(15) == 0


def test_a_missing_artifact_ends_the_process_with_status_1(s3_server, s3_bucket):
    proc, _ = start_server(s3_server, f"s3://{s3_bucket}/models/digits/versions/nope/")
    try:
        assert proc.wait(30) == 1
        assert "could not be loaded" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_in_cluster_direct_mode_runs_the_gates_over_plain_http(server):
    from mlops.promotion import gates

    _, url = server
    client = gates.DirectServiceClient(url)
    inputs, labels = held_out(64)
    report = gates.pre_promotion(
        client, "digits", "v1", gates.Samples(inputs, labels), 0.95, 0.95, gates.Gates()
    )
    assert report.ok, report.as_dict()
    assert [c.name for c in report.checks] == ["quality", "ready", "version", "smoke"]
    assert not gates.check_version(client, "v2").ok
