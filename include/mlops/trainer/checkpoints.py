"""Periodic training checkpoints (``epoch-0003.pt``) and resuming from the newest one.

A checkpoint holds the model and optimizer state, the epoch, the random-number
generator states and running throughput figures, so a resumed run continues exactly
where the interrupted one stopped. It is loaded with ``weights_only=True``: a
checkpoint can never run code.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch

from mlops.trainer.storage import Location

FORMAT = 1
_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used by this run."""


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.pt"


def list_epochs(location: Location) -> list[int]:
    """Epochs that have a checkpoint in ``location``, oldest first."""
    return sorted(int(m.group(1)) for name in location.names() if (m := _NAME.match(name)))


def save(location: Location, state: dict[str, Any], keep: int) -> str:
    """Write ``state`` as the checkpoint of ``state["epoch"]``, then drop all but the ``keep`` newest."""
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buffer)
    uri = location.put(checkpoint_name(state["epoch"]), buffer.getvalue())
    for epoch in list_epochs(location)[:-keep]:
        location.delete(checkpoint_name(epoch))
    return uri


def load_newest(location: Location, compat: dict[str, Any]) -> dict[str, Any] | None:
    """The newest checkpoint's state, or ``None`` when there is none.

    Raises :class:`CheckpointError` when it was written by an incompatible run
    (another architecture, dataset or split), naming the differing settings.
    """
    epochs = list_epochs(location)
    if not epochs:
        return None
    name = checkpoint_name(epochs[-1])
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
