"""The HTTP API of the model server (Starlette).

- ``GET /health``: liveness; 200 while the process can serve, 500 once loading failed.
- ``GET /ready``: 200 only after the model is loaded and warmed up, 503 before and during shutdown.
- ``POST /predict``: ``{"instances": [[64 floats], ...]}`` -> ``{"predictions", "probabilities",
  "model", "model_version"}``; a body that breaks the contract gets 422 with a message naming the
  problem.
- ``GET /metrics``: Prometheus text format.
- ``GET /version``: model name, version, artifact URI and server build.
- The Open Inference Protocol (V2) beside them: ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2``, ``GET /v2/models/{name}[/versions/{version}]``, ``.../ready`` and
  ``POST .../infer`` (see :mod:`mlops.serving.v2`).

Bodies are read with a cap (413 before reading when ``Content-Length`` is over it, at the cap for
a chunked body). Parsing, inference and encoding run in a thread pool sized to the pod's CPU limit,
so the event loop stays free for the probes however busy inference is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
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
from mlops.serving import v2
from mlops.serving.limits import BodyTooLarge, cpu_limit, read_capped
from mlops.serving.model import InvalidInput, OnnxModel, parse_instances, verify_digest

log = logging.getLogger(__name__)

# Sub-millisecond buckets: a small ONNX model answers in well under 1 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ServerConfig:
    """What the server serves; built from the environment by ``from_env``."""

    model_name: str
    model_version: str
    model_uri: str
    model_sha256: str | None = None
    max_batch: int = 1024
    max_body_bytes: int = 8 * 1024 * 1024
    warmup_iterations: int = 30
    inference_threads: int = 0  # 0: one per core of the CPU limit

    @classmethod
    def from_env(cls, env: dict[str, str]) -> ServerConfig:
        """Read MODEL_NAME, MODEL_VERSION, MODEL_URI (required), MODEL_SHA256 (the registered digest
        of the artifact, checked at load when set) and the optional limits (MAX_BATCH, MAX_BODY_BYTES,
        WARMUP_ITERATIONS, INFERENCE_THREADS)."""
        missing = [k for k in ("MODEL_NAME", "MODEL_VERSION", "MODEL_URI") if not env.get(k)]
        if missing:
            raise ValueError(f"missing required environment variables: {', '.join(missing)}")
        digest = env.get("MODEL_SHA256", "").strip().lower().removeprefix("sha256:") or None
        if digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"MODEL_SHA256 must be 64 hex digits, got {env['MODEL_SHA256']!r}")
        return cls(
            model_name=env["MODEL_NAME"],
            model_version=env["MODEL_VERSION"],
            model_uri=env["MODEL_URI"],
            model_sha256=digest,
            max_batch=int(env.get("MAX_BATCH", "1024")),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", str(8 * 1024 * 1024))),
            warmup_iterations=int(env.get("WARMUP_ITERATIONS", "30")),
            inference_threads=int(env.get("INFERENCE_THREADS", "0")),
        )

    def threads(self) -> int:
        """Inference threads: the setting, else one per core that the CPU limit gives."""
        return self.inference_threads if self.inference_threads > 0 else cpu_limit()


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
    loader the reported accuracy (``metrics.json``) is exported as ``mlops_model_accuracy``. When
    ``config.model_sha256`` is set, bytes with another digest are refused and the load fails.
    """
    from mlops.serving.model import download_model, download_reported_accuracy

    state = state or ServerState()
    metrics = Metrics(config.model_name, config.model_version)
    load = loader or download_model
    threads = config.threads()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")

    def load_model() -> None:
        started = time.perf_counter()
        try:
            onnx = load(config.model_uri)
            if config.model_sha256:
                verify_digest(onnx, config.model_sha256, config.model_uri)
            else:
                log.warning("MODEL_SHA256 is not set: the artifact at %s is not pinned", config.model_uri)
            model = OnnxModel(onnx)
            del onnx
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
            # Everything allocated so far lives as long as the process: keep it out of the collector's
            # full passes, which would otherwise pause request handling while they scan it.
            gc.collect()
            gc.freeze()
            state.model = model
            state.ready = True
            log.info(
                "model %s version %s loaded and warmed up in %.2f s; %d inference threads",
                config.model_name,
                config.model_version,
                time.perf_counter() - started,
                threads,
            )
        finally:
            state.loaded_event.set()

    def is_ready() -> bool:
        return state.ready and not state.draining

    def not_ready_reason() -> str:
        return "draining" if state.draining else (state.load_error or "loading")

    async def health(request: Request) -> Response:
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=500)
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if is_ready():
            return JSONResponse({"status": "ready", "model_version": config.model_version})
        return JSONResponse({"status": "not ready", "reason": not_ready_reason()}, status_code=503)

    def encoded(status: int, body: dict) -> tuple[int, bytes, dict[str, str]]:
        return status, json.dumps(body, separators=(",", ":")).encode(), {"content-type": "application/json"}

    def reply(started: float, status: int, content: bytes, headers: dict[str, str]) -> Response:
        response = Response(content, status_code=status, headers=headers)
        metrics.observe(status, time.perf_counter() - started)
        return response

    async def guarded(request: Request, work: Callable[[OnnxModel, bytes], tuple]) -> Response:
        """Read the body with the cap, then run ``work`` (parse, infer, encode) in the inference pool."""
        started = time.perf_counter()
        model = state.model
        if model is None:
            return reply(started, *encoded(503, {"error": f"model is not ready: {not_ready_reason()}"}))
        try:
            body = await read_capped(request, config.max_body_bytes)
        except BodyTooLarge as exc:
            status, content, headers = encoded(413, {"error": str(exc)})
            # The rest of the body is never read: close the connection rather than drain it.
            return reply(started, status, content, {**headers, "connection": "close"})
        return reply(started, *await asyncio.get_running_loop().run_in_executor(pool, work, model, body))

    def predict_work(model: OnnxModel, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        try:
            batch = parse_instances(json.loads(body), config.max_batch)
        except ValueError as exc:  # InvalidInput, and JSONDecodeError
            prefix = "" if isinstance(exc, InvalidInput) else "body is not valid JSON: "
            return encoded(422, {"error": f"{prefix}{exc}"})
        try:
            result = model.predict(batch)
        except Exception as exc:  # a model failure is the server's fault, and must be counted as one
            log.exception("prediction failed")
            return encoded(500, {"error": f"prediction failed: {type(exc).__name__}"})
        return encoded(
            200,
            {
                "predictions": result.classes,
                "probabilities": result.probabilities,
                "model": config.model_name,
                "model_version": config.model_version,
            },
        )

    async def predict(request: Request) -> Response:
        return await guarded(request, predict_work)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def version(request: Request) -> Response:
        return JSONResponse(
            {
                "model": config.model_name,
                "model_version": config.model_version,
                "model_uri": config.model_uri,
                "model_sha256": config.model_sha256,
                "server_version": mlops.__version__,
                "onnxruntime": state.model.onnxruntime_version if state.model else None,
            }
        )

    # -- Open Inference Protocol (V2) ----------------------------------------------------------
    def v2_error(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    def unknown_model(request: Request) -> Response | None:
        name, ver = request.path_params["name"], request.path_params.get("version")
        if name != config.model_name:
            return v2_error(404, f"unknown model {name!r}: this server serves {config.model_name!r}")
        if ver is not None and ver != config.model_version:
            return v2_error(
                404, f"unknown version {ver!r} of {name!r}: this server serves {config.model_version!r}"
            )
        return None

    async def v2_live(request: Request) -> Response:
        if state.load_error:
            return JSONResponse({"live": False, "error": state.load_error}, status_code=500)
        return JSONResponse({"live": True})

    async def v2_ready(request: Request) -> Response:
        if is_ready():
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": not_ready_reason()}, status_code=503)

    async def v2_server(request: Request) -> Response:
        return JSONResponse(
            {"name": "mlops-model-server", "version": mlops.__version__, "extensions": v2.EXTENSIONS}
        )

    async def v2_model(request: Request) -> Response:
        if (error := unknown_model(request)) is not None:
            return error
        if state.model is None:
            return v2_error(503, f"model is not ready: {not_ready_reason()}")
        return JSONResponse(v2.model_metadata(config.model_name, config.model_version, state.model))

    async def v2_model_ready(request: Request) -> Response:
        if (error := unknown_model(request)) is not None:
            return error
        body = {"name": config.model_name, "ready": is_ready()}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    def infer_work(header_length: int | None) -> Callable[[OnnxModel, bytes], tuple]:
        def work(model: OnnxModel, body: bytes) -> tuple[int, bytes, dict[str, str]]:
            try:
                request = v2.parse_request(body, header_length, model, config.max_batch)
            except v2.ProtocolError as exc:
                return encoded(400, {"error": str(exc)})
            try:
                arrays = model.run([name for name, _ in request.outputs], request.feeds)
            except Exception as exc:  # a model failure is the server's fault, and must be counted as one
                log.exception("inference failed")
                return encoded(500, {"error": f"inference failed: {type(exc).__name__}"})
            return 200, *v2.encode_response(config.model_name, config.model_version, request, arrays, model)

        return work

    async def v2_infer(request: Request) -> Response:
        if (error := unknown_model(request)) is not None:
            return error
        length = request.headers.get(v2.BINARY_HEADER)
        if length is not None and not length.isdigit():
            return v2_error(400, f"Inference-Header-Content-Length must be a byte count, got {length!r}")
        return await guarded(request, infer_work(int(length) if length is not None else None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=load_model, name="model-loader", daemon=True).start()
        try:
            yield
        finally:
            pool.shutdown(wait=True, cancel_futures=False)

    model_routes = [
        ("", v2_model, ["GET"]),
        ("/ready", v2_model_ready, ["GET"]),
        ("/infer", v2_infer, ["POST"]),
    ]
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/predict", predict, methods=["POST"]),
            Route("/metrics", metrics_endpoint),
            Route("/version", version),
            Route("/v2/health/live", v2_live),
            Route("/v2/health/ready", v2_ready),
            Route("/v2", v2_server),
            *(
                Route(f"/v2/models/{{name}}{versions}{path}", endpoint, methods=methods)
                for versions in ("", "/versions/{version}")
                for path, endpoint, methods in model_routes
            ),
        ],
        lifespan=lifespan,
    )
    app.state.server_state = state
    app.state.metrics = metrics
    app.state.inference_threads = threads
    return app
