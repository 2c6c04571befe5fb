"""Silences: mute the alerts of a check, a group or a target for a while, with an author and a comment.

Storage: one JSON object in S3 beside the alert state (``health_state_bucket`` /
``health_silences_key``), written with the same conditional requests. It is read by
every health run anyway, needs no connection the health DAG lacks, survives a
metadata-DB restore, and can be read by people (``aws s3 cp``) and by the UI plugin.
A silence ends by itself at ``ends_at``; :func:`expire` ends it early. Expired
silences are kept a week for the record, then dropped.

A silenced alert still fires in the state; its notifications are held back and go
out if it still fires when the silence ends (Alertmanager's semantics).

From code (e.g. the promotion silencing its model's checks during the switch)::

    silence_id = silence("churn", 900, "mlops_promotion", "blue-green switch of churn v4")
    ...
    expire(silence_id)

From a shell: ``python -m mlops.health.silences create churn --minutes 30 --author me --comment why``,
``... list``, ``... expire <id>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops.settings import Settings, get_settings

_KEEP_EXPIRED = timedelta(days=7)
_CAS_ATTEMPTS = 5


@dataclass
class Silence:
    """One silence. ``matcher`` is a check name, a group, a target, or a word of a target (a model name)."""

    id: str
    matcher: str
    author: str
    comment: str
    starts_at: str
    ends_at: str
    expired_at: str | None = None

    def active(self, now: datetime | None = None) -> bool:
        """In force now: started, not ended, not expired early."""
        now = now or datetime.now(UTC)
        return self.expired_at is None and self.starts_at <= _iso(now) < self.ends_at

    def matches(self, alert: Any) -> bool:
        """Whether this silence covers ``alert`` (anything with ``check``, ``target`` and ``group``)."""
        m = self.matcher
        if m in (alert.check, getattr(alert, "group", ""), alert.target):
            return True
        return re.search(rf"(^|[^A-Za-z0-9_]){re.escape(m)}([^A-Za-z0-9_]|$)", alert.target) is not None


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def matches_any(silences: list[Silence], alert: Any) -> bool:
    """Whether any of ``silences`` covers ``alert``."""
    return any(s.matches(alert) for s in silences)


class SilenceStore:
    """The silences object in S3, read and written with compare-and-swap."""

    def __init__(self, bucket: str, key: str, aws_conn_id: str) -> None:
        self.bucket, self.key, self.aws_conn_id = bucket, key, aws_conn_id

    @classmethod
    def from_settings(cls, settings: Settings) -> SilenceStore:
        return cls(
            settings.health_state_bucket or settings.artifacts_bucket,
            settings.health_silences_key,
            settings.aws_conn_id,
        )

    def _client(self) -> Any:
        from mlops.health.state import s3_client

        return s3_client(self.aws_conn_id)

    def load(self) -> tuple[list[Silence], str | None]:
        """Every stored silence and the object's ETag (``None`` when nothing is stored)."""
        client = self._client()
        try:
            obj = client.get_object(Bucket=self.bucket, Key=self.key)
        except client.exceptions.NoSuchKey:
            return [], None
        return [Silence(**s) for s in json.loads(obj["Body"].read()).get("silences", [])], obj["ETag"]

    def _update(self, change: Any) -> Any:
        from botocore.exceptions import ClientError

        for _ in range(_CAS_ATTEMPTS):
            silences, etag = self.load()
            result = change(silences)
            cutoff = _iso(datetime.now(UTC) - _KEEP_EXPIRED)
            kept = [s for s in silences if (s.expired_at or s.ends_at) >= cutoff]
            body = json.dumps({"silences": [asdict(s) for s in kept]}, indent=1).encode()
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self._client().put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json", **condition
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    continue
                raise
            return result
        raise RuntimeError(f"s3://{self.bucket}/{self.key}: too many concurrent writers")

    def active(self) -> list[Silence]:
        """The silences in force now. An unreadable store mutes nothing (alerts go out)."""
        try:
            silences, _ = self.load()
        except Exception:
            import logging

            logging.getLogger(__name__).warning("silences unreadable; nothing is muted", exc_info=True)
            return []
        return [s for s in silences if s.active()]


def silence(
    matcher: str, duration_seconds: float, author: str, comment: str, settings: Settings | None = None
) -> str:
    """Silence the alerts of a check, group or target (``matcher``) for ``duration_seconds``; its id.

    ``author`` and ``comment`` are required: a silence nobody can explain is not kept.
    """
    if not matcher or not author.strip() or not comment.strip():
        raise ValueError("silence: matcher, author and comment are required")
    if not 0 < duration_seconds <= 30 * 86400:
        raise ValueError("silence: duration_seconds must be between 1 s and 30 days")
    now = datetime.now(UTC)
    new = Silence(
        id=uuid.uuid4().hex[:12],
        matcher=matcher,
        author=author.strip(),
        comment=comment.strip(),
        starts_at=_iso(now),
        ends_at=_iso(now + timedelta(seconds=duration_seconds)),
    )
    SilenceStore.from_settings(settings or get_settings())._update(lambda silences: silences.append(new))
    return new.id


def expire(silence_id: str, settings: Settings | None = None) -> bool:
    """End silence ``silence_id`` now; False when no active silence has that id."""

    def change(silences: list[Silence]) -> bool:
        for s in silences:
            if s.id == silence_id and s.active():
                s.expired_at = _iso(datetime.now(UTC))
                return True
        return False

    return SilenceStore.from_settings(settings or get_settings())._update(change)


def list_silences(include_expired: bool = False, settings: Settings | None = None) -> list[Silence]:
    """The active silences (and, with ``include_expired``, the recently ended ones)."""
    silences, _ = SilenceStore.from_settings(settings or get_settings()).load()
    return silences if include_expired else [s for s in silences if s.active()]


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops.health.silences create|list|expire``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops.health.silences", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="silence a check, group or target")
    create.add_argument("matcher")
    create.add_argument("--minutes", type=float, required=True)
    create.add_argument("--author", required=True)
    create.add_argument("--comment", required=True)
    listing = sub.add_parser("list", help="show the active silences")
    listing.add_argument("--all", action="store_true", help="include recently ended silences")
    end = sub.add_parser("expire", help="end a silence now")
    end.add_argument("id")
    args = parser.parse_args(argv)
    if args.command == "create":
        print(silence(args.matcher, args.minutes * 60, args.author, args.comment))
    elif args.command == "list":
        for s in list_silences(include_expired=args.all):
            state = "active" if s.active() else f"ended {s.expired_at or s.ends_at}"
            print(f"{s.id}  {s.matcher!r:30} until {s.ends_at}  {state}  by {s.author}: {s.comment}")
    elif not expire(args.id):
        print(f"no active silence {args.id}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
