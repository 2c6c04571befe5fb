"""
### mlops_backups: nightly backups to S3 with retention and restore verification

Every day at 03:00 UTC (and on manual trigger) this DAG backs up, to
`s3://<backup_bucket>` (`MLOPS_BACKUP_BUCKET`, encrypted per `MLOPS_BACKUP_SSE`):

- **Postgres** (`backup_postgres`, one mapped task per database): `pg_dump -Fc`
  streamed into a multipart upload, no temporary file; sha256 in the object
  metadata and in `postgres/<db>/<date>/manifest.json` with exact row counts.
- **Verification** (`verify_postgres_backup`): every new dump is restored into a
  throwaway database; sha256 and every table's row count must match the
  manifest. Success writes `_markers/last_verified.json` (read by the health
  checks) and posts a Slack summary; failure pages PagerDuty (critical,
  one incident per database: `mlops-backups/verify/<db>`).
- **Model artifacts** (`sync_artifacts`): checksum-based, server-side, parallel
  sync of `s3://<artifacts_bucket>/models/` into `artifacts/`; optional deletion
  capped by `MLOPS_ARTIFACTS_MAX_DELETE_FRACTION`.
- **Kubernetes config** (`export_kubernetes_config`): clean YAML of the training
  and serving namespaces (Secrets by name only) under `kubernetes/<date>/`.
- **Retention** (`apply_retention`): keep 7 daily, 4 weekly, 6 monthly
  (`MLOPS_BACKUP_KEEP_*`), never the newest verified dump; every deletion is logged.

Keys are named after the run's logical date: rerunning a date overwrites it.
Params choose the parts and allow a dry run (nothing written, connections and
sizes checked) and a retention dry run (deletions only logged).

Owner: platform team (#mlops-platform).

#### Triage
- **`backup_postgres` failed**:
  "cannot connect to Postgres" → check the `platform_postgres` connection and the
  database; "S3 bucket ... not usable / cannot be reached" → the `aws_default`
  connection or the bucket; "pg_dump ... exited with N" → the stderr tail in the
  message (permissions, lock timeout). The multipart upload was aborted: nothing
  partial is in S3. Clear the task to rerun the same date (it overwrites).
- **`verify_postgres_backup` failed (PagerDuty critical)**: the message lists every
  problem. `sha256 ... != manifest` or `size ...` → the object was damaged or
  replaced after upload: rerun `backup_postgres` for the date, and keep the
  previous verified dump (retention never deletes it; see
  `_markers/postgres/<db>/last_verified.json`). `pg_restore exited` → the dump
  does not restore (extensions or roles missing on the verify server:
  `MLOPS_BACKUP_VERIFY_CONN_ID`). Row-count differences → investigate before
  relying on this dump. A leftover `verify_*` database can be dropped.
- **`sync_artifacts` failed with DeleteCapExceeded**: too many artifacts vanished
  from the source; nothing was changed. Check the artifacts bucket; if intended,
  raise `MLOPS_ARTIFACTS_MAX_DELETE_FRACTION` for one run.
- **`export_kubernetes_config` failed**: the `kubernetes_default` connection or
  RBAC (list on the exported kinds and Secrets in the platform namespaces).
- **`apply_retention` failed**: S3 refused a deletion (bucket policy/object
  lock); nothing else is affected. Try a run with `retention_dry_run` to see the plan.
- Restore by hand: `pg_restore --no-owner -d <db>` of the dump (stream it with
  `aws s3 cp s3://.../<db>.dump -`); Kubernetes: download `kubernetes/<date>/`
  and `kubectl apply -R -f` it, then recreate the Secrets listed in its manifest.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from mlops import tags
from mlops.callbacks import failure_callbacks


def _params() -> dict[str, Param]:
    return {
        "postgres": Param(
            True, type="boolean", title="Postgres", description="Dump and verify the databases."
        ),
        "artifacts": Param(
            True,
            type="boolean",
            title="Model artifacts",
            description="Sync the model artifacts into the backup bucket.",
        ),
        "delete_removed_artifacts": Param(
            False,
            type="boolean",
            title="Delete removed artifacts",
            description="Also delete backup copies of artifacts deleted at the "
            "source (capped by MLOPS_ARTIFACTS_MAX_DELETE_FRACTION).",
        ),
        "kubernetes": Param(
            True,
            type="boolean",
            title="Kubernetes config",
            description="Export the platform namespaces as clean YAML.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Check connections and report what would be written; write nothing.",
        ),
        "retention_dry_run": Param(
            False,
            type="boolean",
            title="Retention dry run",
            description="Log which backups retention would delete, delete none.",
        ),
    }


@dag(
    dag_id="mlops_backups",
    doc_md=__doc__,
    schedule="0 3 * * *",  # 03:00 UTC, the platform's backup window
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs of the same date write the same keys; never interleave them
    dagrun_timeout=timedelta(hours=6),
    params=_params(),
    tags=[tags.BACKUP, tags.POSTGRES, tags.S3, tags.KUBERNETES, tags.SCHEDULED],
    default_args={
        "owner": "platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": failure_callbacks(),
    },
)
def mlops_backups():
    @task
    def list_databases() -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import databases

        if not get_current_context()["params"]["postgres"]:
            raise AirflowSkipException("postgres disabled by params")
        return databases()

    @task(execution_timeout=timedelta(hours=3))
    def backup_postgres(database: str) -> dict:
        from mlops.backups.tasks import backup_postgres as run
        from mlops.backups.tasks import run_day

        ctx = get_current_context()
        return run(database, run_day(ctx), ctx["run_id"], ctx["params"]["dry_run"])

    # Besides the generic failure alert, pages critical with one incident per database.
    @task(execution_timeout=timedelta(hours=3))
    def verify_postgres_backup(backup: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import verify_postgres

        ctx = get_current_context()
        if backup.get("dry_run"):
            raise AirflowSkipException("dry run: no new dump to verify")
        return verify_postgres(backup, run_url=getattr(ctx["ti"], "log_url", "") or "")

    @task(execution_timeout=timedelta(hours=2))
    def sync_artifacts() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import sync_model_artifacts

        params = get_current_context()["params"]
        if not params["artifacts"]:
            raise AirflowSkipException("artifacts disabled by params")
        return sync_model_artifacts(params["dry_run"], params["delete_removed_artifacts"])

    @task(execution_timeout=timedelta(minutes=30))
    def export_kubernetes_config() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import export_kube_config, run_day

        ctx = get_current_context()
        if not ctx["params"]["kubernetes"]:
            raise AirflowSkipException("kubernetes disabled by params")
        return export_kube_config(run_day(ctx), ctx["params"]["dry_run"])

    # Runs after the backups unless one failed: a failed night must not thin out the history.
    @task(trigger_rule="none_failed", execution_timeout=timedelta(minutes=30))
    def apply_retention() -> dict:
        from mlops.backups.tasks import apply_retention_policy

        params = get_current_context()["params"]
        return apply_retention_policy(dry_run=params["retention_dry_run"] or params["dry_run"])

    verified = verify_postgres_backup.expand(backup=backup_postgres.expand(database=list_databases()))
    # The Kubernetes export is not upstream: its failure (e.g. RBAC) fails the run but never stops retention.
    [verified, sync_artifacts()] >> apply_retention()
    export_kubernetes_config()


mlops_backups()
