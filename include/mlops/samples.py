"""``samples.json``: held-out inputs with their labels, beside every model version.

The trainer writes every held-out sample it evaluated, each with the prediction of the
model it exported (``predicted``). The promotion's gates send the inputs to the
candidate's model server and compare the answers with the labels (smoke: accuracy) and
with the trainer's predictions (parity: the same inputs give the same classes). This
module is the one definition of the format both sides use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def samples_document(
    inputs: Sequence[Sequence[float]],
    labels: Sequence[int],
    predicted: Sequence[int] | None = None,
    *,
    input_name: str = "input",
    output_name: str = "logits",
    preprocessing: str = "",
) -> dict[str, Any]:
    """Build the document: one entry per sample, with the producing model's own prediction if known."""
    if len(inputs) != len(labels) or (predicted is not None and len(predicted) != len(labels)):
        raise ValueError("samples: inputs, labels and predictions must have the same length")
    samples = []
    for i, (row, label) in enumerate(zip(inputs, labels, strict=True)):
        entry: dict[str, Any] = {"input": [round(float(v), 6) for v in row], "label": int(label)}
        if predicted is not None:
            entry["predicted"] = int(predicted[i])
        samples.append(entry)
    return {
        "input_name": input_name,
        "output_name": output_name,
        "preprocessing": preprocessing,
        "samples": samples,
    }


def parse_samples(doc: Any) -> tuple[list[list[float]], list[int]]:
    """Return ``(inputs, labels)``; a malformed document raises ``ValueError`` saying what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list) or not doc["samples"]:
        raise ValueError('samples.json needs a non-empty "samples" list')
    inputs: list[list[float]] = []
    labels: list[int] = []
    for i, entry in enumerate(doc["samples"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("input"), list) or "label" not in entry:
            raise ValueError(f'samples.json: samples[{i}] needs an "input" list and a "label"')
        inputs.append([float(v) for v in entry["input"]])
        labels.append(int(entry["label"]))
    return inputs, labels


def parse_predicted(doc: Any) -> list[int] | None:
    """The producing model's predictions, one per sample; ``None`` when no entry carries one.

    A document where only some entries carry ``predicted`` is malformed (``ValueError``): a partial
    set would make the parity check compare fewer samples than the trainer wrote.
    """
    entries = doc["samples"]
    present = [isinstance(entry, dict) and "predicted" in entry for entry in entries]
    if not any(present):
        return None
    if not all(present):
        missing = present.index(False)
        raise ValueError(f'samples.json: samples[{missing}] has no "predicted", but other samples do')
    return [int(entry["predicted"]) for entry in entries]
