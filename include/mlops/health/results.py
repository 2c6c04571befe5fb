"""What a check reports: one result per target it looked at."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CheckResult:
    """The outcome of one check against one target (a URL, a Deployment, a database...).

    ``errored`` marks a check that could not run to completion (timeout, exception):
    targets it did not report on keep their alert state instead of counting as healthy.
    """

    check: str
    target: str
    ok: bool
    summary: str
    severity: str | None = None  # overrides the check's severity (e.g. a critical escalation)
    details: dict[str, Any] = field(default_factory=dict)
    errored: bool = False
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**data)


@dataclass
class SweepReport:
    """Every result of one sweep, plus the checks that ran to completion."""

    results: list[CheckResult]
    completed: list[str]
    duration_seconds: float
    started_at: str | None = None  # ISO 8601 UTC; orders sweeps so a stale one changes no state

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "completed": list(self.completed),
            "duration_seconds": self.duration_seconds,
            "started_at": self.started_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        return cls(
            results=[CheckResult.from_dict(r) for r in data["results"]],
            completed=list(data["completed"]),
            duration_seconds=float(data["duration_seconds"]),
            started_at=data.get("started_at"),
        )

    @property
    def failing(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]
