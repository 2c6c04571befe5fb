"""Real local HTTP(S) endpoints for the health-check tests and the benchmark.

Paths: ``/healthy`` (200, JSON), ``/error`` (500), ``/hang`` (never answers until the
server stops), ``/badjson`` (200, HTML), ``/slow/<ms>`` (answers after a delay),
``/json/<name>`` (200 with the JSON registered under ``name``), and any exact path
set in ``routes``. HTTPS uses a trustme
certificate whose expiry the test chooses.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HEALTHY_BODY = {"status": "ok", "models": [{"name": "churn", "version": "3", "ready": True}]}


class EndpointServer:
    """A threaded HTTP(S) server on 127.0.0.1 with the paths above; counts requests per path."""

    def __init__(self, tls_dir: Path | None = None, cert_days_left: float = 365) -> None:
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.documents: dict[str, Any] = {}
        self.routes: dict[str, tuple[int, Any]] = {}  # exact path -> (status, JSON or bytes body)
        self.ca_path: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every keep-alive response (real servers set it too).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                with server._lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path in server.routes:
                    return self._send(*server.routes[self.path])
                if self.path.startswith("/hang"):
                    server._release.wait(60)
                    return
                if self.path.startswith("/slow/"):
                    time.sleep(int(self.path.rsplit("/", 1)[1]) / 1000)
                    return self._send(200, HEALTHY_BODY)
                if self.path.startswith("/json/"):
                    return self._send(200, server.documents[self.path.split("/", 2)[2].split("?")[0]])
                if self.path.startswith("/healthy"):
                    return self._send(200, HEALTHY_BODY)
                if self.path.startswith("/error"):
                    return self._send(500, {"status": "error"})
                if self.path.startswith("/badjson"):
                    return self._send(200, b"<html>gateway says hello</html>")
                self._send(404, {"status": "not found"})

            def _send(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                kind = "text/plain; version=0.0.4" if isinstance(body, bytes) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 1024  # the benchmark opens hundreds of connections at once

        self._server = Server(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls_dir is not None:
            self._server.socket = self._tls(tls_dir, cert_days_left).wrap_socket(
                self._server.socket, server_side=True
            )
            self.scheme = "https"

    def _tls(self, tls_dir: Path, days_left: float) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA()
        now = dt.datetime.now(dt.UTC)
        cert = ca.issue_cert(
            "127.0.0.1",
            "localhost",
            not_before=now - dt.timedelta(days=30),
            not_after=now + dt.timedelta(days=days_left),
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        tls_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path = str(tls_dir / "endpoint-ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        return ctx

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}{path}"

    def start(self) -> EndpointServer:
        threading.Thread(target=self._server.serve_forever, name="health-endpoints", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
