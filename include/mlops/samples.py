"""``samples.json``: held-out inputs with their labels, beside every model version.

The trainer writes it; the promotion's smoke gate sends its inputs to the candidate's
model server and compares the answers with the labels. This module is the one
definition of the format both sides use.
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
