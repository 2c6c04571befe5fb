"""Load the dev connections data file and turn it into ``AIRFLOW_CONN_*`` variables.

Both ``make run`` and the test harness use this, so the laptop and the tests
configure Airflow the same way. Connections from the environment are visible to
the dag-processor, the workers and the API server without touching the metadata DB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


def _fill(value: Any, values: Mapping[str, str], missing: set[str]) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values or values[name] in (None, ""):
                missing.add(name)
                return ""
            return str(values[name])

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, dict):
        return {k: _fill(v, values, missing) for k, v in value.items()}
    return value


def load_dev_connections(values: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Return ``{conn_id: connection}`` with placeholders filled; incomplete connections are left out."""
    raw = json.loads(resources.files("mlops.dev").joinpath("connections.json").read_text())
    result: dict[str, dict[str, Any]] = {}
    for conn_id, conn in raw.items():
        if conn_id.startswith("_"):
            continue
        missing: set[str] = set()
        filled = _fill(conn, values, missing)
        if not missing:
            if "port" in filled and filled["port"] != "":
                filled["port"] = int(filled["port"])
            result[conn_id] = filled
    return result


def connections_env(connections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``{AIRFLOW_CONN_<ID>: json}`` for each connection."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()}
