"""A small, safe predicate language for JSON bodies: ``{path, op, value}``, never ``eval``.

``path`` is a dotted key path into the document; integer segments (or ``[n]``) index
lists: ``models[0].status`` and ``models.0.status`` are the same. ``op`` is one of
:data:`OPS`. ``exists`` ignores ``value``; every other op fails on a missing path.
"""

from __future__ import annotations

import operator
import re
import reprlib
from collections.abc import Callable
from typing import Any

_MISSING = object()
_INDEX = re.compile(r"\[(\d+)\]")


def _contains(actual: Any, expected: Any) -> bool:
    return isinstance(actual, str | list | dict) and expected in actual


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "in": lambda actual, expected: actual in expected,
    "not_in": lambda actual, expected: actual not in expected,
    "contains": _contains,
    "exists": lambda actual, expected: True,
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["path", "op"],
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "op": {"enum": sorted(OPS)},
        "value": {},
    },
}


def resolve(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document``, or a private sentinel when it is absent."""
    current = document
    for segment in _INDEX.sub(r".\1", path).strip(".").split("."):
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return _MISSING
    return current


def evaluate(document: Any, predicate: dict[str, Any]) -> str | None:
    """Check one predicate; ``None`` when it holds, else a one-line reason."""
    path, op = predicate["path"], predicate["op"]
    expected = predicate.get("value")
    actual = resolve(document, path)
    if actual is _MISSING:
        return f"{path}: missing"
    try:
        held = OPS[op](actual, expected)
    except TypeError:
        held = False
    return None if held else f"{path}: {reprlib.repr(actual)} is not {op} {expected!r}"
