"""Optional Prometheus queries (instant queries over ``/api/v1/query``).

Each sample the query returns is compared with ``fail_if`` (``{op, value}``); one
result per series, named by ``target_labels``. Written after the seed's rules:
serving down, p95 latency above 0.5 s, accuracy below 0.85 (see checks.yaml and
helm-values/monitoring/). ``on_empty`` says what an empty answer means: for
"serving down" no series is good news, for accuracy it means no data.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

_OPS = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
}
# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("httpx",)

SCHEMA: dict[str, Any] = {
    "required": ["url", "query", "fail_if"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://"},
        "query": {"type": "string", "minLength": 1},
        "fail_if": {
            "type": "object",
            "required": ["op", "value"],
            "additionalProperties": False,
            "properties": {"op": {"enum": sorted(_OPS)}, "value": {"type": "number"}},
        },
        "target_labels": {"type": "array", "items": {"type": "string"}},
        "on_empty": {"enum": ["ok", "fail"]},
        "verify_tls": {"type": "boolean"},
        "ca_file": {"type": "string"},
    },
}


async def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """Run the query; a series fails when ``value <op> threshold`` holds (NaN never does)."""
    p = spec.params
    client = ctx.http_client(p.get("ca_file") or p.get("verify_tls", True))
    response = await client.get(
        p["url"].rstrip("/") + "/api/v1/query", params={"query": p["query"]}, timeout=spec.timeout_seconds
    )
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus query failed: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    series = data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]
    op, threshold = p["fail_if"]["op"], p["fail_if"]["value"]
    labels = p.get("target_labels", [])
    if not series:
        ok = p.get("on_empty", "ok") == "ok"
        return [
            CheckResult(
                spec.name,
                spec.name,
                ok,
                f"{spec.name}: query returned no series",
                details={"query": p["query"]},
            )
        ]
    results = []
    for s in series:
        value = float(s["value"][1])
        target = ",".join(f"{k}={s['metric'].get(k, '')}" for k in labels) or spec.name
        failing = not math.isnan(value) and _OPS[op](value, threshold)
        summary = f"{spec.name} {target}: {value:g}" + (f" ({op} {threshold:g})" if failing else "")
        results.append(
            CheckResult(
                spec.name,
                target,
                not failing,
                summary,
                details={"query": p["query"], "value": value, "metric": s["metric"]},
            )
        )
    return results
