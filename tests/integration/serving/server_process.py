"""Start ``python -m mlops.serving`` as a real process against the moto S3 server, and read its memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from mlops.dev.ports import free_port


def start_server(s3_server: str, uri: str, version: str = "v1", **env: str) -> tuple[subprocess.Popen, str]:
    """The server process (stdout and stderr merged into ``proc.stdout``) and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.serving"],
        env={
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "AWS_ENDPOINT_URL": s3_server,
            "MODEL_NAME": "digits",
            "MODEL_VERSION": version,
            "MODEL_URI": uri,
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 30) -> None:
    """Wait until ``/ready`` answers 200; fail with the server's output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {proc.stdout.read()}"
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never turned ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (``VmHWM`` in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def hammer(url: str, path: str, body: bytes, stop_event, statuses) -> None:
    """POST ``body`` to ``path`` over one keep-alive connection until ``stop_event`` is set; count the
    replies per status in ``statuses`` (a shared dict). Runs in a process of its own, so the load
    generator never competes with the test's own probes for one interpreter lock."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    counts: dict[int, int] = {}
    while not stop_event.is_set():
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        counts[response.status] = counts.get(response.status, 0) + 1
    conn.close()
    for status, count in counts.items():
        statuses[status] = statuses.get(status, 0) + count


def probe(url: str, path: str) -> tuple[int, float]:
    """One GET on a fresh connection, as the kubelet probes; returns (status, seconds)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    return response.status, time.perf_counter() - started
