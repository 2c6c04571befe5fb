"""Load the health-check declarations (``checks.yaml``) and validate them with JSON Schema.

Checks are data, not code: operators add or tune a check by editing the YAML file
named by the ``health_checks_path`` setting (``MLOPS_HEALTH_CHECKS_PATH``); the
packaged ``mlops/health/checks.yaml`` is the default. String values may use
``${setting}`` placeholders, filled from :class:`~mlops.settings.Settings` at task run
time (``${serving_namespace}``, ``${backup_bucket}``...). A check with
``enabled_if: <setting>`` is skipped while that setting is empty (the optional
Prometheus checks use ``enabled_if: prometheus_url``).
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mlops.health.checks import TYPES, schema_for
from mlops.settings import Settings

DEFAULT_PATH = Path(__file__).with_name("checks.yaml")
SEVERITIES = ("critical", "error", "warning", "info")
PAGED_SEVERITIES = frozenset({"critical", "error"})

_COMMON = {
    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"},
    "type": {"enum": sorted(TYPES)},
    "description": {"type": "string"},
    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 240},
    "failures_before_alert": {"type": "integer", "minimum": 1},
    "severity": {"enum": list(SEVERITIES)},
    "page": {"type": "boolean"},
    "enabled_if": {"type": "string"},
    "passes_before_resolve": {"type": "integer", "minimum": 1},
    "group": {"type": "string", "minLength": 1},
    "inhibits": {"type": "array", "items": {"type": "string"}},
}
_DEFAULTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        k: _COMMON[k]
        for k in ("timeout_seconds", "failures_before_alert", "passes_before_resolve", "severity")
    },
}
FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["checks"],
    "additionalProperties": False,
    "properties": {
        "defaults": _DEFAULTS_SCHEMA,
        "checks": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "type"], "properties": _COMMON},
        },
    },
}


class ConfigError(ValueError):
    """The check configuration is invalid; the message names the check and the field."""


@dataclass(frozen=True)
class CheckSpec:
    """One declared check, with defaults applied and placeholders filled."""

    name: str
    type: str
    timeout_seconds: float = 10.0
    failures_before_alert: int = 3
    severity: str = "error"
    page: bool | None = None  # None: page for critical/error only
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    passes_before_resolve: int = 1
    group: str = ""  # alerts of checks sharing a group (a service, a target) are one incident
    inhibits: tuple[str, ...] = ()  # checks of the same group muted while this one fires (a root cause)

    @property
    def pages(self) -> bool:
        """Whether a firing alert of this check goes to PagerDuty (Slack always hears of it)."""
        return self.severity in PAGED_SEVERITIES if self.page is None else self.page

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fill(value: Any, mapping: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        try:
            return string.Template(value).substitute(mapping)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{where}: unknown placeholder {exc} in {value!r}") from exc
    if isinstance(value, list):
        return [_fill(v, mapping, where) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, mapping, where) for k, v in value.items()}
    return value


def _placeholders(settings: Settings) -> dict[str, str]:
    values = {f.name: str(getattr(settings, f.name)) for f in fields(Settings)}
    values["airflow_api_url"] = settings.airflow_api_url or settings.airflow_base_url
    values["health_state_bucket"] = settings.health_state_bucket or settings.artifacts_bucket
    return values


def parse(document: Any, settings: Settings) -> list[CheckSpec]:
    """Validate a loaded YAML document and return the enabled checks."""
    try:
        jsonschema.validate(document, FILE_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise ConfigError(f"checks file: {exc.message} at {'/'.join(map(str, exc.absolute_path))}") from exc
    defaults = document.get("defaults", {})
    mapping = _placeholders(settings)
    specs: list[CheckSpec] = []
    seen: set[str] = set()
    for raw in document["checks"]:
        name = raw["name"]
        if name in seen:
            raise ConfigError(f"check {name}: declared twice")
        seen.add(name)
        enabled_if = raw.get("enabled_if")
        if enabled_if is not None:
            if enabled_if not in mapping:
                raise ConfigError(f"check {name}: enabled_if names no setting: {enabled_if!r}")
            if mapping[enabled_if] in ("", "False"):  # an empty string setting or a false boolean one
                continue
        common = set(_COMMON)
        params = _fill({k: v for k, v in raw.items() if k not in common}, mapping, f"check {name}")
        schema = {"type": "object", "additionalProperties": False, **schema_for(raw["type"])}
        try:
            jsonschema.validate(params, schema)
        except jsonschema.ValidationError as exc:
            path = "/".join(map(str, exc.absolute_path)) or "(parameters)"
            raise ConfigError(f"check {name}: {exc.message} at {path}") from exc
        timeout = float(raw.get("timeout_seconds", defaults.get("timeout_seconds", 10)))
        if timeout > settings.health_sweep_deadline_seconds:
            raise ConfigError(
                f"check {name}: timeout_seconds {timeout:g} exceeds the sweep's deadline of "
                f"{settings.health_sweep_deadline_seconds:g}s (health_sweep_deadline_seconds)"
            )
        specs.append(
            CheckSpec(
                name=name,
                type=raw["type"],
                timeout_seconds=timeout,
                failures_before_alert=int(
                    raw.get("failures_before_alert", defaults.get("failures_before_alert", 3))
                ),
                severity=raw.get("severity", defaults.get("severity", "error")),
                page=raw.get("page"),
                description=raw.get("description", ""),
                params=params,
                passes_before_resolve=int(
                    raw.get(
                        "passes_before_resolve",
                        defaults.get("passes_before_resolve", settings.health_passes_before_resolve),
                    )
                ),
                group=_fill(raw.get("group", ""), mapping, f"check {name}"),
                inhibits=tuple(raw.get("inhibits", ())),
            )
        )
    return specs


def load_checks(settings: Settings, path: str | Path | None = None) -> list[CheckSpec]:
    """Read, validate and return the enabled checks from ``path`` (default: the settings' file).

    Raises :class:`ConfigError` naming the check and field when the file is invalid.
    """
    source = Path(path or settings.health_checks_path or DEFAULT_PATH)
    try:
        document = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return parse(document, settings)
