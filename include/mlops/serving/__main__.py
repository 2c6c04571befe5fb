"""Entry point of the model-server container: ``python -m mlops.serving``.

Environment: MODEL_NAME, MODEL_VERSION, MODEL_URI (``s3://bucket/models/NAME/versions/V/``),
MODEL_SHA256 (the artifact's digest recorded at registration; another artifact is refused),
PORT (default 8080), HOST (default 0.0.0.0), GRACEFUL_SHUTDOWN_SECONDS (default 25),
LOG_LEVEL (default info), ACCESS_LOG (default off), MAX_BODY_BYTES (default 8 MiB),
INFERENCE_THREADS (default: one per core of the CPU limit), plus the standard AWS variables
(credentials, region, ``AWS_ENDPOINT_URL``) for the artifact store.

SIGTERM: /ready turns 503, the listener closes, in-flight requests finish, exit status 0.
A model that cannot be loaded, or whose bytes do not match MODEL_SHA256, ends the process with
status 1 (the log names the expected and the actual digest), so Kubernetes restarts it and the
rollout's progress deadline catches a broken version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

import uvicorn

from mlops.serving.app import ServerConfig, ServerState, create_app

log = logging.getLogger("mlops.serving")


class _Server(uvicorn.Server):
    """uvicorn's server, marking the pod not ready as soon as a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig, frame) -> None:
        self._state.draining = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises the signal after shutting down; a drained server exits 0 instead.
            self._captured_signals.clear()


def main(env: dict[str, str] | None = None) -> int:
    """Serve until a shutdown signal; return the process exit status."""
    env = dict(os.environ if env is None else env)
    level = env.get("LOG_LEVEL", "info").upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = ServerConfig.from_env(env)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    # Inference threads hold the GIL in json/numpy C calls: hand it back to the event loop after 1 ms
    # instead of the default 5 ms, so a probe never waits long for the interpreter.
    sys.setswitchinterval(0.001)
    state = ServerState()
    app = create_app(config, state=state)
    server = _Server(
        uvicorn.Config(
            app,
            host=env.get("HOST", "0.0.0.0"),  # noqa: S104 -- a container listens on all its interfaces
            port=int(env.get("PORT", "8080")),
            access_log=env.get("ACCESS_LOG", "").lower() in {"1", "true", "yes"},
            log_level=level.lower(),
            timeout_graceful_shutdown=int(env.get("GRACEFUL_SHUTDOWN_SECONDS", "25")),
            server_header=False,
        ),
        state,
    )

    def stop_if_load_failed() -> None:
        state.loaded_event.wait()
        if state.load_error:
            server.should_exit = True

    threading.Thread(target=stop_if_load_failed, name="load-watch", daemon=True).start()
    server.run()
    if state.load_error:
        log.error("exiting: the model could not be loaded (%s)", state.load_error)
        return 1
    log.info("shut down cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
