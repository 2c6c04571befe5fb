"""One DagBag for the whole session, parsed with connection and Variable lookups trapped."""

from __future__ import annotations

from dataclasses import dataclass, field
from unittest import mock

import pytest

from tests.conftest import REPO_ROOT


@dataclass
class ParsedDags:
    dagbag: object
    lookups: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def parsed() -> ParsedDags:
    """Parse dags/ once; record any connection or Variable lookup made while parsing.

    The traps only record and raise: they hide nothing, a lookup during parsing fails the policy test.
    """
    from airflow.dag_processing.dagbag import DagBag

    lookups: list[str] = []

    def trap(what: str):
        def _record(*args, **kwargs):
            lookups.append(f"{what}{args[-1:] if args else ''}")
            raise RuntimeError(f"{what} called while parsing DAG files")

        return _record

    targets = {
        "airflow.sdk.bases.hook.BaseHook.get_connection": "BaseHook.get_connection",
        "airflow.sdk.definitions.connection.Connection.get": "Connection.get",
        "airflow.sdk.definitions.variable.Variable.get": "Variable.get",
        "airflow.models.connection.Connection.get_connection_from_secrets": "Connection.from_secrets",
        "airflow.models.variable.Variable.get": "Variable.get(models)",
    }
    patches = [mock.patch(target, side_effect=trap(name)) for target, name in targets.items()]
    for p in patches:
        p.start()
    try:
        dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), safe_mode=False)
    finally:
        for p in patches:
            p.stop()
    return ParsedDags(dagbag, lookups)
