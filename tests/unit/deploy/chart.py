"""Helm's value merging, reimplemented for offline validation of helm-values/.

helm combines ``-f`` files left to right (maps merged recursively, everything else replaced,
nulls kept), then coalesces the result with the chart's ``values.yaml``: a null in the user's
values deletes the chart's default for that key. The merged tree is what the chart's
``values.schema.json`` is checked against by ``helm install``/``helm lint``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[3]
HELM_VALUES = REPO / "helm-values"
CHART_VERSION = "1.22.0"
# The chart's values/schema are vendored beside this module, so a clone alone passes the tests;
# MLOPS_AIRFLOW_CHART_DIR points at another unpacked `helm pull apache-airflow/airflow --untar`.
VENDORED_CHART_DIR = Path(__file__).resolve().parent / f"airflow-chart-{CHART_VERSION}"
_DEFAULT_CHART_DIRS = (VENDORED_CHART_DIR,)


def chart_dir() -> Path:
    """The directory holding the chart's Chart.yaml, values.yaml and values.schema.json."""
    env = os.environ.get("MLOPS_AIRFLOW_CHART_DIR")
    candidates = [Path(env)] if env else list(_DEFAULT_CHART_DIRS)
    for path in candidates:
        if (path / "values.schema.json").is_file() and (path / "values.yaml").is_file():
            return path
    raise FileNotFoundError(
        f"Airflow chart {CHART_VERSION} values/schema not found in {[str(p) for p in candidates]}; "
        "set MLOPS_AIRFLOW_CHART_DIR to the unpacked chart (helm pull apache-airflow/airflow "
        f"--version {CHART_VERSION} --untar)"
    )


@functools.cache
def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((chart_dir() / "values.yaml").read_text())


@functools.cache
def chart_validator() -> Draft7Validator:
    return Draft7Validator(json.loads((chart_dir() / "values.schema.json").read_text()))


def merge_files(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Combine two ``-f`` files as helm does: maps recursively, other values (lists, nulls) replaced."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_files(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def coalesce(user: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Apply the user's values over the chart defaults; a user null deletes the default key."""
    result = copy.deepcopy(user)
    for key, default in defaults.items():
        if key in result and result[key] is None:
            del result[key]
        elif key not in result:
            result[key] = copy.deepcopy(default)
        elif isinstance(default, dict) and isinstance(result[key], dict):
            result[key] = coalesce(result[key], default)
        # else: the user's value wins (helm warns when a table meets a non-table, and keeps the user's)
    return result


def load_values(*files: Path) -> dict[str, Any]:
    """Read ``-f`` files in order and combine them (not yet coalesced with the chart)."""
    combined: dict[str, Any] = {}
    for path in files:
        combined = merge_files(combined, yaml.safe_load(path.read_text()) or {})
    return combined


def rendered_values(*files: Path) -> dict[str, Any]:
    """The values the chart templates see for ``helm install -f files[0] -f files[1] ...``."""
    return coalesce(load_values(*files), chart_defaults())


def schema_errors(values: dict[str, Any]) -> list[str]:
    """Every schema violation, as ``path: message`` lines (empty when the values are valid)."""
    errors = sorted(chart_validator().iter_errors(values), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_VALUE_REF = re.compile(
    r"^(?:toYaml\s+)?\.Values((?:\.\w+)+)(?:\s*\|\s*(?:quote|nindent\s+\d+|indent\s+\d+))*$"
)


def pod_template_skeleton(values: dict[str, Any], release: str = "airflow") -> dict[str, Any]:
    """The podTemplate as a Pod, without helm: lines that are only template control flow or chart
    helpers are dropped, ``.Values.x`` / ``toYaml .Values.x`` actions are filled from ``values``
    (as inline JSON, which is YAML), ``.Release.Name`` with ``release``, other actions with a word.
    Good enough to validate the literal structure; the CI workflow renders it with real helm."""

    def fill(match: re.Match[str]) -> str:
        action = match.group(1)
        ref = _VALUE_REF.match(action)
        if ref:
            value: Any = values
            for part in ref.group(1).strip(".").split("."):
                value = value[part]
            return json.dumps(value)
        return release if action == ".Release.Name" else "placeholder"

    lines = [ln for ln in values["podTemplate"].splitlines() if not re.fullmatch(r"\s*\{\{-.*\}\}\s*", ln)]
    doc = yaml.safe_load(_ACTION.sub(fill, "\n".join(lines)))
    for container in doc["spec"]["containers"]:
        if container.get("envFrom") == "placeholder":
            container["envFrom"] = []  # the chart's custom_airflow_environment_from helper
    return doc


def tpl(text: str, values: dict[str, Any]) -> str:
    """Helm's ``tpl`` for the one form the values use (``{{ .Values.a.b }}``), as the chart renders
    ``extraEnv``; no helm binary is obtainable here, so anything else is refused rather than guessed."""

    def fill(match: re.Match[str]) -> str:
        ref = re.fullmatch(r"\.Values((?:\.\w+)+)", match.group(1))
        if not ref:
            raise ValueError(f"tpl: unsupported action {match.group(0)!r}")
        value: Any = values
        for part in ref.group(1).strip(".").split("."):
            value = value[part]
        return str(value)

    return _ACTION.sub(fill, text)
