"""Label and field selectors, with the operators and edge cases the real API server implements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_KEY = r"[A-Za-z0-9][A-Za-z0-9_./-]*"
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" also match objects that lack the label, as in Kubernetes.
        return value not in self.values


class LabelSelector:
    """A parsed label selector; an empty selector matches everything."""

    def __init__(self, requirements: list[Requirement] | None = None):
        self.requirements = requirements or []

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h``; raises a 400 ``ApiError`` on bad syntax."""
    requirements = []
    for part in _split_top_level(text or ""):
        if m := _SET.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQUALITY.match(part):
            op = "!=" if m.group(2) == "!=" else "="
            requirements.append(Requirement(m.group(1), op, (m.group(3),)))
        elif m := _EXISTS.match(part):
            requirements.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return LabelSelector(requirements)


def selector_from_spec(spec: dict | None) -> LabelSelector:
    """A selector from a ``LabelSelector`` object (matchLabels/matchExpressions) or a plain map."""
    spec = spec or {}
    if "matchLabels" not in spec and "matchExpressions" not in spec:
        return LabelSelector([Requirement(k, "=", (str(v),)) for k, v in spec.items()])
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in spec.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return LabelSelector(reqs)


def node_selector_term_matches(term: dict, labels: dict[str, str]) -> bool:
    """Whether a node's labels satisfy one ``nodeSelectorTerm`` (its matchExpressions)."""
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in term.get("matchExpressions") or []:
        op = ops.get(expr["operator"])
        if op is None:  # Gt/Lt are rare enough that treating them as satisfied is fine here
            continue
        if not Requirement(expr["key"], op, tuple(expr.get("values") or ())).matches(labels):
            return False
    return True


_FIELD = re.compile(r"^\s*([^=!\s]+)\s*(==|!=|=)\s*(.*?)\s*$")


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """Parse ``metadata.name=x,status.phase!=Running`` into (path, op, value) triples."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        m = _FIELD.match(part)
        if not m:
            raise bad_request(f"invalid selector: {part!r}; can't understand it")
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return out


def field_value(obj: dict, path: str) -> str:
    """The string form of a dotted field path; missing fields read as ``""`` like in Kubernetes."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(obj: dict, requirements: list[tuple[str, str, str]]) -> bool:
    """Whether ``obj`` satisfies every field requirement."""
    for path, op, value in requirements:
        equal = field_value(obj, path) == value
        if equal != (op == "="):
            return False
    return True
