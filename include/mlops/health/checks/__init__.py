"""Check types. Each module exposes ``SCHEMA`` (its parameters, JSON Schema) and ``run``.

``run(spec, ctx)`` returns a list of :class:`~mlops.health.results.CheckResult`; it may be
a coroutine function (network I/O on the runner's event loop) or a plain function (run
in a worker thread). Heavy clients are imported inside ``run``, so loading the
configuration stays cheap.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TYPES: dict[str, str] = {
    "http": "mlops.health.checks.http",
    "kubernetes_deployments": "mlops.health.checks.kubernetes",
    "kubernetes_pods": "mlops.health.checks.kubernetes",
    "kubernetes_hpas": "mlops.health.checks.kubernetes",
    "kubernetes_gpu_nodes": "mlops.health.checks.kubernetes",
    "postgres": "mlops.health.checks.postgres",
    "s3": "mlops.health.checks.s3",
    "backup_freshness": "mlops.health.checks.backups",
    "airflow": "mlops.health.checks.airflow",
    "prometheus": "mlops.health.checks.prometheus",
    "model_evaluation": "mlops.health.checks.evaluation",
}


def module_for(check_type: str) -> ModuleType:
    """The module implementing ``check_type``."""
    return importlib.import_module(TYPES[check_type])


def schema_for(check_type: str) -> dict:
    """JSON Schema ``properties`` for the parameters of ``check_type``."""
    module = module_for(check_type)
    schemas = module.SCHEMAS if hasattr(module, "SCHEMAS") else {check_type: module.SCHEMA}
    return schemas[check_type]


def runner_for(check_type: str):
    """The callable that runs a check of ``check_type``."""
    module = module_for(check_type)
    runners = module.RUNNERS if hasattr(module, "RUNNERS") else {check_type: module.run}
    return runners[check_type]


def preload(check_types: set[str]) -> None:
    """Import the heavy clients of ``check_types`` now (seconds when cold), outside any timeout."""
    for check_type in sorted(check_types):
        for name in getattr(module_for(check_type), "PRELOAD", ()):
            importlib.import_module(name)
