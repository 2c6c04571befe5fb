"""Open task-failure incidents, one small S3 object each, so that a task's next success resolves its page.

A failed task pages once per DAG and task (``airflow/<dag_id>/<task_id>``), however
many runs fail; the success callback resolves it. Knowing whether an incident is
open costs the success callback one ``HEAD`` instead of a PagerDuty event per
successful task. The objects live beside the health alert state
(``health_state_bucket``/``health_incidents_prefix``). Without an ``aws_default``
connection nothing is recorded: failures still page, and are resolved by hand.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mlops.settings import Settings

log = logging.getLogger(__name__)


def task_incident_key(dag_id: str, task_id: str) -> str:
    """The PagerDuty ``dedup_key`` of a task's failures: one incident per DAG and task."""
    return f"airflow/{dag_id}/{task_id}"


class IncidentLedger:
    """Which task-failure incidents are open (paged and not yet resolved)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.health_state_bucket or settings.artifacts_bucket
        self.prefix = settings.health_incidents_prefix

    def available(self) -> bool:
        """Whether the S3 connection is configured (otherwise nothing is recorded)."""
        from mlops.alerting.router import _configured

        return _configured(self.settings.aws_conn_id)

    def _client(self) -> Any:
        from mlops.health.state import s3_client

        # A callback must stay quick: short timeouts, one retry.
        return s3_client(self.settings.aws_conn_id, connect_timeout=3, read_timeout=5, attempts=2)

    def _key(self, incident: str) -> str:
        return self.prefix + quote(incident, safe="/") + ".json"

    def open(self, incident: str, details: dict[str, Any]) -> None:
        """Record ``incident`` as open (idempotent)."""
        body = {"incident": incident, "opened_at": datetime.now(UTC).isoformat(timespec="seconds"), **details}
        self._client().put_object(
            Bucket=self.bucket,
            Key=self._key(incident),
            Body=json.dumps(body, default=str).encode(),
            ContentType="application/json",
        )

    def is_open(self, incident: str) -> bool:
        """Whether ``incident`` is recorded as open."""
        from botocore.exceptions import ClientError

        try:
            self._client().head_object(Bucket=self.bucket, Key=self._key(incident))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def close(self, incident: str) -> None:
        """Forget ``incident`` (after its resolve was delivered)."""
        self._client().delete_object(Bucket=self.bucket, Key=self._key(incident))
