"""The HTTP API of the model server (Starlette).

- ``GET /health``: liveness; 200 while the process can serve, 500 once loading failed.
- ``GET /ready``: 200 only after the model is loaded and warmed up, 503 before and during shutdown.
- ``POST /predict``: ``{"instances": [[64 floats], ...]}`` -> ``{"predictions", "probabilities",
  "model", "model_version"}``; a body that breaks the contract gets 422 with a message naming the
  problem.
- ``GET /metrics``: Prometheus text format.
- ``GET /version``: model name, version, artifact URI and server build.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import mlops
from mlops.serving.model import InvalidInput, OnnxModel, parse_instances

log = logging.getLogger(__name__)

# Sub-millisecond buckets: a small ONNX model answers in well under 1 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ServerConfig:
    """What the server serves; built from the environment by ``from_env``."""

    model_name: str
    model_version: str
    model_uri: str
    max_batch: int = 1024
    max_body_bytes: int = 8 * 1024 * 1024
    warmup_iterations: int = 30

    @classmethod
    def from_env(cls, env: dict[str, str]) -> ServerConfig:
        """Read MODEL_NAME, MODEL_VERSION, MODEL_URI (required) and the optional limits."""
        missing = [k for k in ("MODEL_NAME", "MODEL_VERSION", "MODEL_URI") if not env.get(k)]
        if missing:
            raise ValueError(f"missing required environment variables: {', '.join(missing)}")
        return cls(
            model_name=env["MODEL_NAME"],
            model_version=env["MODEL_VERSION"],
            model_uri=env["MODEL_URI"],
            max_batch=int(env.get("MAX_BATCH", "1024")),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", str(8 * 1024 * 1024))),
            warmup_iterations=int(env.get("WARMUP_ITERATIONS", "30")),
        )


@dataclass
class ServerState:
    """Lifecycle flags shared by the loader thread, the handlers and the signal handler."""

    model: OnnxModel | None = None
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    loaded_event: threading.Event = field(default_factory=threading.Event)


class Metrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self, model: str, version: str):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "mlops_model_requests",
            "Prediction requests by HTTP status code.",
            ["model", "version", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlops_model_request_duration_seconds",
            "Prediction request latency by HTTP status code.",
            ["model", "version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        info = Gauge(
            "mlops_model_info",
            "The model version this server serves (always 1).",
            ["model", "version"],
            registry=self.registry,
        )
        info.labels(model, version).set(1)
        self.accuracy = Gauge(
            "mlops_model_accuracy",
            "Held-out accuracy from the version's metrics.json.",
            ["model", "version"],
            registry=self.registry,
        )
        self._labels = (model, version)
        self._children: dict[int, tuple[Counter, Histogram]] = {}

    def observe(self, status: int, seconds: float) -> None:
        children = self._children.get(status)
        if children is None:  # label lookups are the slow part of prometheus_client: cache them per status
            children = (
                self.requests.labels(*self._labels, str(status)),
                self.duration.labels(*self._labels, str(status)),
            )
            self._children[status] = children
        children[0].inc()
        children[1].observe(seconds)


def create_app(
    config: ServerConfig, loader: Callable[[str], bytes] | None = None, state: ServerState | None = None
) -> Starlette:
    """Build the ASGI app. The model is loaded in a background thread started at app startup.

    ``loader`` reads the ONNX bytes for ``config.model_uri`` (default: from S3); with the default
    loader the reported accuracy (``metrics.json``) is exported as ``mlops_model_accuracy``.
    """
    from mlops.serving.model import download_model, download_reported_accuracy

    state = state or ServerState()
    metrics = Metrics(config.model_name, config.model_version)
    load = loader or download_model

    def load_model() -> None:
        started = time.perf_counter()
        try:
            model = OnnxModel(load(config.model_uri))
            model.warm_up(config.warmup_iterations)
            if loader is None and (accuracy := download_reported_accuracy(config.model_uri)) is not None:
                metrics.accuracy.labels(config.model_name, config.model_version).set(accuracy)
        except Exception as exc:
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "could not load %s version %s from %s: %s",
                config.model_name,
                config.model_version,
                config.model_uri,
                state.load_error,
            )
        else:
            state.model = model
            state.ready = True
            log.info(
                "model %s version %s loaded and warmed up in %.2f s",
                config.model_name,
                config.model_version,
                time.perf_counter() - started,
            )
        finally:
            state.loaded_event.set()

    async def health(request: Request) -> Response:
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=500)
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if state.ready and not state.draining:
            return JSONResponse({"status": "ready", "model_version": config.model_version})
        reason = "draining" if state.draining else (state.load_error or "loading")
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    def reply(status: int, body: dict, started: float) -> Response:
        response = Response(
            json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json"
        )
        metrics.observe(status, time.perf_counter() - started)
        return response

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        model = state.model
        if model is None:
            return reply(503, {"error": "model is not loaded yet"}, started)
        body = await request.body()
        if len(body) > config.max_body_bytes:
            return reply(
                413, {"error": f"body is {len(body)} bytes; at most {config.max_body_bytes}"}, started
            )
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return reply(422, {"error": f"body is not valid JSON: {exc}"}, started)
        try:
            batch = parse_instances(payload, config.max_batch)
        except InvalidInput as exc:
            return reply(422, {"error": str(exc)}, started)
        try:
            result = model.predict(batch)
        except Exception as exc:  # a model failure is the server's fault, and must be counted as one
            log.exception("prediction failed")
            return reply(500, {"error": f"prediction failed: {type(exc).__name__}"}, started)
        return reply(
            200,
            {
                "predictions": result.classes,
                "probabilities": result.probabilities,
                "model": config.model_name,
                "model_version": config.model_version,
            },
            started,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def version(request: Request) -> Response:
        return JSONResponse(
            {
                "model": config.model_name,
                "model_version": config.model_version,
                "model_uri": config.model_uri,
                "server_version": mlops.__version__,
                "onnxruntime": state.model.onnxruntime_version if state.model else None,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=load_model, name="model-loader", daemon=True).start()
        yield

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/predict", predict, methods=["POST"]),
            Route("/metrics", metrics_endpoint),
            Route("/version", version),
        ],
        lifespan=lifespan,
    )
    app.state.server_state = state
    app.state.metrics = metrics
    return app
