"""Airflow's own components, from the API server's ``GET /api/v2/monitor/health``.

The endpoint needs no authentication and reports ``metadatabase``, ``scheduler``,
``triggerer`` and ``dag_processor``, each with a ``status`` ("healthy"/"unhealthy",
or null for a component that never ran) and its latest heartbeat.
"""

from __future__ import annotations

from typing import Any

from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("httpx",)

SCHEMA: dict[str, Any] = {
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://"},
        "components": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "verify_tls": {"type": "boolean"},
        "ca_file": {"type": "string"},
    },
}
DEFAULT_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
HEALTH_PATH = "/api/v2/monitor/health"


async def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """One result per component; all fail together when the API itself cannot be read."""
    p = spec.params
    url = p["url"].rstrip("/") + HEALTH_PATH
    client = ctx.http_client(p.get("ca_file") or p.get("verify_tls", True))
    response = await client.get(url, timeout=spec.timeout_seconds)
    response.raise_for_status()
    health = response.json()
    results = []
    for component in p.get("components", DEFAULT_COMPONENTS):
        info = health.get(component) or {}
        status = info.get("status")
        heartbeat = next((v for k, v in info.items() if k.endswith("heartbeat")), None)
        summary = f"airflow {component}: {status or 'no status'}" + (
            f", last heartbeat {heartbeat}" if heartbeat else ""
        )
        results.append(
            CheckResult(
                spec.name,
                f"airflow/{component}",
                status == "healthy",
                summary,
                details={"status": status, "latest_heartbeat": heartbeat},
            )
        )
    return results
