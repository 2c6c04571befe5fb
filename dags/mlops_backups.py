"""
### mlops_backups: nightly backups to S3 with retention and restore verification

Every day at 03:00 UTC (and on manual trigger) this DAG backs up, to
`s3://<backup_bucket>` (`MLOPS_BACKUP_BUCKET`, encrypted per `MLOPS_BACKUP_SSE`):

- **Bucket** (`prepare_bucket`): detects versioning and Object Lock, and applies
  (idempotently) the lifecycle rule `AbortIncompleteMultipartUpload` (a worker
  killed by SIGKILL or OOM cannot abort its upload).
- **Globals** (`backup_globals`): `pg_dumpall --globals-only` (roles, without
  passwords unless `MLOPS_BACKUP_GLOBALS_WITH_PASSWORDS`), restored onto the
  scratch server before any database (`verify_globals`).
- **Postgres** (`backup_postgres`, one mapped task per database): `pg_dump -Fc`
  streamed into a multipart upload under its own immutable key
  `postgres/<db>/<date>/<backup id>/`; nothing is ever overwritten. The manifest
  (sha256, exact row counts, grants) is written last: the commit point.
- **Verification** (`verify_postgres_backup`): every new dump is restored into a
  throwaway database on the scratch server (`MLOPS_BACKUP_VERIFY_CONN_ID`); sha256,
  row counts and grants must match the manifest. Only then is
  `_markers/postgres/<db>/last_verified.json` moved to it (the health check reads
  it, per database) and a Slack summary posted; failure pages PagerDuty
  (critical, one incident per database: `mlops-backups/verify/<db>`).
- **Metrics** (`publish_backup_metrics`): per database, the time of the last
  verified backup, its size and duration, pushed to the Pushgateway
  (`MLOPS_PUSHGATEWAY_URL`); the `BackupStale` alert reads them.
- **Model artifacts** (`sync_artifacts`): checksum-based, server-side, parallel
  sync of `s3://<artifacts_bucket>/models/` into `artifacts/`; copies the source
  deleted or overwrote are kept under `artifacts-retired/` for
  `MLOPS_ARTIFACTS_RETIRED_GRACE_DAYS`. The delete cap applies to deletions only.
- **Kubernetes config** (`export_kubernetes_config`): clean YAML of the platform
  namespaces (Secrets by name only, never their data) under `kubernetes/<date>/<id>/`.
- **Retention** (`apply_retention`): keep 7 daily, 4 weekly, 6 monthly
  (`MLOPS_BACKUP_KEEP_*`), never the newest verified dump, at most
  `MLOPS_BACKUP_RETENTION_MAX_DELETE_FRACTION` per run; versions are deleted on a
  versioned bucket and locked ones are never attempted; then the orphan sweep
  removes (and reports) backups without a manifest older than a day.

Params choose the parts and allow a dry run (nothing written, connections and
sizes checked) and a retention dry run (deletions only logged).

Owner: platform team (#mlops-platform).

#### Triage
- **`backup_postgres` failed**:
  "cannot connect to Postgres" → check the `platform_postgres` connection and the
  database; "S3 bucket ... not usable / cannot be reached" → the `aws_default`
  connection or the bucket; "pg_dump ... exited with N" → the stderr tail in the
  message (permissions; "canceling statement due to lock timeout": a migration held
  a lock longer than `MLOPS_BACKUP_LOCK_WAIT_TIMEOUT`). The multipart upload was
  aborted and nothing of this run stays. Clearing the task makes a new backup; it
  never replaces an existing one.
- **`verify_postgres_backup` failed (PagerDuty critical)**: the message lists every
  problem. `sha256 ... != manifest`, `ETag` or `size ...` → the object was damaged
  or replaced after upload: rerun the backup, and keep the previous verified dump
  (the marker still names it, retention never deletes it). `pg_restore exited` →
  the dump does not restore (extensions missing on the scratch server). Privilege
  differences → roles changed between the globals and the dump, or the globals
  did not restore. "no scratch server" → set `MLOPS_BACKUP_VERIFY_CONN_ID`.
- **`verify_globals` failed**: the psql errors in the message (other than
  "already exists"); the scratch server's version may be older than the source's.
- **`sync_artifacts` failed with DeleteCapExceeded**: too many artifacts vanished
  from the source; new copies were still made, no deletion was. Check the
  artifacts bucket; if intended, raise `MLOPS_ARTIFACTS_MAX_DELETE_FRACTION` for one run.
- **`export_kubernetes_config` failed**: "refused to list X" names the verb and
  resource the backup Role lacks (failed at once, not retried: grant it, then clear the
  task); otherwise the `kubernetes_default` connection.
- **`apply_retention` failed**: RetentionCapExceeded (policy or dates wrong;
  nothing deleted), or S3 refused a deletion (bucket policy); nothing else is
  affected. Run with `retention_dry_run` to see the plan, the locked versions and
  the orphans.
- Restore by hand: the README's "Restoring a backup" (globals first, then each
  database); Kubernetes: download `kubernetes/<date>/<id>/` and
  `kubectl apply -R -f` it, then recreate the Secrets listed in its manifest.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from mlops import tags
from mlops.callbacks import failure_callbacks, success_callbacks


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
    max_active_runs=1,  # one backup of a database at a time: no two dumps hold snapshots at once
    dagrun_timeout=timedelta(hours=6),
    params=_params(),
    tags=[tags.BACKUP, tags.POSTGRES, tags.S3, tags.KUBERNETES, tags.SCHEDULED],
    default_args={
        "owner": "platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": failure_callbacks(),
        "on_success_callback": success_callbacks(),  # resolves a task's failure incident
    },
)
def mlops_backups():
    @task
    def prepare_bucket() -> dict:
        from mlops.backups.tasks import prepare_bucket as run

        return run(get_current_context()["params"]["dry_run"])

    @task
    def list_databases() -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import databases

        if not get_current_context()["params"]["postgres"]:
            raise AirflowSkipException("postgres disabled by params")
        return databases()

    @task(execution_timeout=timedelta(minutes=30))
    def backup_globals() -> dict | None:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import backup_server_globals, run_day

        ctx = get_current_context()
        if not ctx["params"]["postgres"]:
            raise AirflowSkipException("postgres disabled by params")
        return backup_server_globals(run_day(ctx), ctx["params"]["dry_run"])

    @task(execution_timeout=timedelta(minutes=30))
    def verify_globals(globals_backup: dict | None) -> dict | None:
        from mlops.backups.tasks import verify_server_globals

        return verify_server_globals(globals_backup)

    @task(execution_timeout=timedelta(hours=3))
    def backup_postgres(database: str) -> dict:
        from mlops.backups.tasks import backup_postgres as run
        from mlops.backups.tasks import run_day

        ctx = get_current_context()
        return run(database, run_day(ctx), ctx["run_id"], ctx["params"]["dry_run"])

    # Besides the generic failure alert, pages critical with one incident per database.
    @task(execution_timeout=timedelta(hours=3))
    def verify_postgres_backup(backup: dict, globals_restored: dict | None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops.backups.tasks import verify_postgres

        ctx = get_current_context()
        if backup.get("dry_run"):
            raise AirflowSkipException("dry run: no new dump to verify")
        return verify_postgres(
            backup, run_url=getattr(ctx["ti"], "log_url", "") or "", globals_restored=globals_restored
        )

    @task(retries=3)
    def publish_backup_metrics(result: dict) -> bool:
        from mlops.backups.tasks import publish_backup_metrics as run

        return run(result)

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

    bucket = prepare_bucket()
    databases = list_databases()
    globals_backup = backup_globals()
    globals_restored = verify_globals(globals_backup)
    bucket >> [databases, globals_backup]
    backups = backup_postgres.expand(database=databases)
    verified = verify_postgres_backup.partial(globals_restored=globals_restored).expand(backup=backups)
    published = publish_backup_metrics.expand(result=verified)
    artifacts, kube = sync_artifacts(), export_kubernetes_config()
    bucket >> [artifacts, kube]
    # The Kubernetes export is not upstream: its failure (e.g. RBAC) fails the run but never stops retention.
    [published, artifacts] >> apply_retention()


mlops_backups()
