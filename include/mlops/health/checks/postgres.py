"""Postgres: the platform database accepts a connection, and has connection slots to spare.

After the seed's ``pg_stat_activity`` script: client connections are compared with
``max_connections`` (minus the superuser reserve, which ordinary clients cannot use).
"""

from __future__ import annotations

import json
from typing import Any

from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("airflow.providers.postgres.hooks.postgres",)

SCHEMA: dict[str, Any] = {
    "properties": {
        "conn_id": {"type": "string"},
        "max_connection_ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    },
}
_USAGE = """
SELECT
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
  (SELECT count(*) FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND state = 'active') AS active,
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int AS reserved
"""


def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """Connect (bounded by the check's timeout) and compare connections with the usable maximum."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn_id = spec.params.get("conn_id") or ctx.settings.postgres_conn_id
    ratio_limit = spec.params.get("max_connection_ratio", 0.8)
    timeout = max(1, int(spec.timeout_seconds))
    hook = PostgresHook(postgres_conn_id=conn_id, options=f"-c statement_timeout={timeout * 1000}")
    # Bound the connect itself: psycopg2 otherwise waits on the OS's TCP timeout (minutes).
    hook.connection.extra = json.dumps({**hook.connection.extra_dejson, "connect_timeout": timeout})
    conn = hook.get_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(_USAGE)
            connections, active, max_connections, reserved = cur.fetchone()
    finally:
        conn.close()
    usable = max(1, max_connections - reserved)
    ratio = connections / usable
    ok = ratio < ratio_limit
    summary = f"postgres {conn_id}: {connections}/{usable} connections ({ratio:.0%}, {active} active)" + (
        "" if ok else f", above {ratio_limit:.0%}"
    )
    return [
        CheckResult(
            spec.name,
            conn_id,
            ok,
            summary,
            details={
                "connections": connections,
                "active": active,
                "max_connections": max_connections,
                "superuser_reserved": reserved,
                "ratio": round(ratio, 3),
            },
        )
    ]
