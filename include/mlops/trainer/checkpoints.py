"""Training checkpoints and resuming from the newest one.

``epoch-0003.pt`` is written after epoch 3; ``epoch-0003-batch-000042.pt`` when the run was
stopped (SIGTERM) after 42 global batches of epoch 4. A checkpoint holds the model and
optimizer state, the position, the running loss of a partial epoch and throughput figures;
each epoch's order is a function of the seed and the epoch, so a resumed run replays the
same batches as an uninterrupted one. It is loaded with ``weights_only=True``: a
checkpoint can never run code. In a data-parallel run only rank 0 writes; every rank reads.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch

from mlops.trainer.storage import Location

FORMAT = 2
_NAME = re.compile(r"^epoch-(\d{4,})(?:-batch-(\d{6,}))?\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used by this run."""


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """The name of the checkpoint after ``epoch`` whole epochs and ``batch`` batches of the next."""
    return f"epoch-{epoch:04d}-batch-{batch:06d}.pt" if batch else f"epoch-{epoch:04d}.pt"


def list_positions(location: Location) -> list[tuple[int, int]]:
    """``(epoch, batch)`` of every checkpoint in ``location``, oldest first."""
    return sorted(
        (int(m.group(1)), int(m.group(2) or 0)) for name in location.names() if (m := _NAME.match(name))
    )


def list_epochs(location: Location) -> list[int]:
    """Epochs that have an end-of-epoch checkpoint in ``location``, oldest first."""
    return [epoch for epoch, batch in list_positions(location) if batch == 0]


def save(location: Location, state: dict[str, Any], keep: int) -> str:
    """Write ``state`` as the checkpoint of ``(state["epoch"], state["batch"])``, then drop all but
    the ``keep`` newest."""
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buffer)
    uri = location.put(checkpoint_name(state["epoch"], state.get("batch", 0)), buffer.getvalue())
    for position in list_positions(location)[:-keep]:
        location.delete(checkpoint_name(*position))
    return uri


def load_newest(location: Location, compat: dict[str, Any]) -> dict[str, Any] | None:
    """The newest checkpoint's state, or ``None`` when there is none.

    Raises :class:`CheckpointError` when it was written by an incompatible run
    (another architecture, dataset or split), naming the differing settings.
    """
    positions = list_positions(location)
    if not positions:
        return None
    name = checkpoint_name(*positions[-1])
    raw = location.get(name)
    if raw is None:  # deleted between listing and reading
        return None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CheckpointError(f"CHECKPOINT_URI: {location.child(name)} cannot be loaded ({exc})") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"CHECKPOINT_URI: {location.child(name)} has unknown format {state.get('format')!r}"
        )
    differs = {k: (state["compat"].get(k), v) for k, v in compat.items() if state["compat"].get(k) != v}
    if differs:
        detail = ", ".join(f"{k}: checkpoint {old!r}, this run {new!r}" for k, (old, new) in differs.items())
        raise CheckpointError(
            f"CHECKPOINT_URI: {location.child(name)} belongs to an incompatible run ({detail}); "
            "use a fresh CHECKPOINT_URI"
        )
    return state
