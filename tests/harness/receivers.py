"""Local HTTP(S) receivers that stand in for Slack webhooks and the PagerDuty Events API.

They are real servers on 127.0.0.1: the providers' clients reach them over the
wire. Each records the JSON it receives (with the monotonic time it arrived) and
can be told to answer errors (``fail_next``: a number of requests; ``fail_until``:
every request for a while) or to answer slowly (``delay``).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    accepted: bool = False


@dataclass
class _Fault:
    status: int
    times: int


class Receiver:
    """A recording HTTP(S) endpoint. ``fail_next(503, times=2)`` answers errors before recovering."""

    def __init__(self, name: str, ok_status: int, ok_body: Any, tls_cert_dir: Path | None = None) -> None:
        self.name = name
        self.ok_status = ok_status
        self.ok_body = ok_body
        self._tls_cert_dir = tls_cert_dir
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._faults: list[_Fault] = []
        self._down_until = 0.0
        self._down_status = 503
        self.delay = 0.0  # seconds before each answer (a slow service)
        self.ca_path: str | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- test API ---------------------------------------------------------------------------
    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def bodies(self, path_prefix: str = "") -> list[Any]:
        return [r.body for r in self.received if r.path.startswith(path_prefix)]

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(status, times))

    def fail_until(self, status: int, seconds: float) -> None:
        """Answer ``status`` to every request for the next ``seconds`` (an outage), then recover."""
        with self._lock:
            self._down_status, self._down_until = status, time.monotonic() + seconds

    def recover(self) -> None:
        """End any outage, fault or delay now."""
        with self._lock:
            self._faults.clear()
            self._down_until = 0.0
            self.delay = 0.0

    def accepted(self, path_prefix: str = "") -> list[Received]:
        """Requests that got the OK answer (not an injected fault)."""
        with self._lock:
            return [r for r in self._received if r.path.startswith(path_prefix) and r.accepted]

    def reset(self) -> None:
        with self._lock:
            self._received.clear()
            self._faults.clear()
            self._down_until = 0.0
            self.delay = 0.0

    @property
    def url(self) -> str:
        assert self._server is not None, "receiver not started"
        scheme = "https" if self._tls_cert_dir else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                status, payload = receiver._answer(
                    Received("POST", self.path, dict(self.headers.items()), body)
                )
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/json" if not isinstance(payload, bytes) else "text/plain"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self._tls_cert_dir:
            self._server.socket = self._tls_context().wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, name=f"{self.name}-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def _tls_context(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        assert self._tls_cert_dir is not None
        self._tls_cert_dir.mkdir(parents=True, exist_ok=True)
        ca_file = self._tls_cert_dir / f"{self.name}-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        self.ca_path = str(ca_file)
        return ctx

    def _answer(self, request: Received) -> tuple[int, Any]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self._received.append(request)
            request.accepted = False
            if time.monotonic() < self._down_until:
                return self._down_status, {"status": "error", "message": f"outage {self._down_status}"}
            if self._faults:
                fault = self._faults[0]
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.pop(0)
                return fault.status, {"status": "error", "message": f"injected {fault.status}"}
            request.accepted = True
        body = self.ok_body(request) if callable(self.ok_body) else self.ok_body
        return self.ok_status, body


# Slack's documented limits (api.slack.com/reference/block-kit/blocks, chat.postMessage "msg_too_long"):
# 50 blocks, 3000 characters in a section's text, 150 in a header, 40,000 for the whole message.
SLACK_MAX_BLOCKS, SLACK_MAX_SECTION, SLACK_MAX_HEADER, SLACK_MAX_MESSAGE = 50, 3000, 150, 40000


def slack_rejection(body: Any) -> str | None:
    """The error Slack answers (HTTP 400) for a message over its limits, or None."""
    if not isinstance(body, dict):
        return "invalid_payload"
    blocks = body.get("blocks") or []
    if len(blocks) > SLACK_MAX_BLOCKS:
        return "invalid_blocks"
    total = len(body.get("text") or "")
    for block in blocks:
        texts = [block.get("text") or {}, *(block.get("elements") or [])]
        for text in texts:
            size = len(text.get("text") or "")
            total += size
            limit = SLACK_MAX_HEADER if block.get("type") == "header" else SLACK_MAX_SECTION
            if size > limit:
                return "invalid_blocks"
    return "msg_too_long" if total > SLACK_MAX_MESSAGE else None


class SlackReceiver(Receiver):
    """Answers 400 with Slack's error text for a message over Slack's limits, like Slack."""

    def _answer(self, request: Received) -> tuple[int, Any]:
        error = slack_rejection(request.body)
        if error is None:
            return super()._answer(request)
        with self._lock:
            self._received.append(request)
        return 400, error.encode()


def slack_receiver() -> Receiver:
    """Slack incoming webhooks answer 200 with the body ``ok``."""
    return SlackReceiver("slack", 200, b"ok")


def pagerduty_receiver(cert_dir: Path) -> Receiver:
    """PagerDuty Events API v2 answers 202 with the dedup key, over HTTPS only."""

    def body(request: Received) -> dict[str, Any]:
        key = (request.body or {}).get("dedup_key") if isinstance(request.body, dict) else None
        return {"status": "success", "message": "Event processed", "dedup_key": key or "generated-key"}

    return Receiver("pagerduty", 202, body, tls_cert_dir=cert_dir)


@dataclass
class Receivers:
    slack: Receiver
    pagerduty: Receiver
    extra: dict[str, Receiver] = field(default_factory=dict)
