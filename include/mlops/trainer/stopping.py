"""A stop request (SIGTERM: spot preemption, eviction, a cleared task) that the training loop honours
between two batches, after writing a checkpoint of exactly where it stopped."""

from __future__ import annotations

import logging

log = logging.getLogger("mlops.trainer")


class Stopped(Exception):  # noqa: N818 - a stop is not an error
    """Training stopped on request; ``checkpoint`` is where the retry resumes (None: no progress lost)."""

    def __init__(self, checkpoint: str | None) -> None:
        super().__init__(checkpoint or "")
        self.checkpoint = checkpoint


class StopRequest:
    """Set from a signal handler; read by the training loop."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        if not self.requested:
            log.info("received SIGTERM: stopping after this batch, with a checkpoint for the retry")
        self.requested = True


STOP = StopRequest()
