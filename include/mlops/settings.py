"""Run-time settings: connection ids, namespaces, buckets and images.

Settings are read when a task runs, never while a DAG file is parsed, so the
dag-processor and the workers can be configured independently. Each value has
a default and can be overridden by an environment variable named
``MLOPS_<FIELD>`` (upper case), e.g. ``MLOPS_TRAINING_NAMESPACE=ml-train``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    """The project's configuration contract; see the README's "Configuration" section."""

    # Connection ids (Airflow connections or a secrets backend).
    kubernetes_conn_id: str = "kubernetes_default"
    aws_conn_id: str = "aws_default"
    postgres_conn_id: str = "platform_postgres"
    slack_conn_id: str = "slack_alerts"
    pagerduty_conn_id: str = "pagerduty_events"

    # Kubernetes placement.
    training_namespace: str = "ml-training"
    serving_namespace: str = "ml-serving"
    training_service_account: str = "mlops-trainer"

    # Storage.
    artifacts_bucket: str = "mlops-artifacts"
    backup_bucket: str = "mlops-backups"

    # Images.
    trainer_image: str = "ghcr.io/mlops-airflow/trainer:0.1.0"
    # Where a run's `image` may come from: comma-separated registries/namespaces ending in "/"
    # (anything under them) or whole repositories (any tag or digest of them). Empty: the
    # repository of trainer_image only. Read when the DAG file is parsed (the trigger form's
    # pattern) and again when the run is planned.
    trainer_image_allowlist: str = ""
    model_server_image: str = "ghcr.io/mlops-airflow/model-server:0.1.0"

    # Training pods: S3 credentials come from this Secret (keys aws_access_key_id,
    # aws_secret_access_key); the endpoint is only set for non-AWS S3.
    trainer_s3_secret: str = "mlops-trainer-s3"  # noqa: S105 - a Secret's name, not its value
    trainer_s3_endpoint: str = ""

    # Pod lifecycle.
    pod_startup_timeout_seconds: int = 600
    pod_poll_interval_seconds: float = 5.0
    keep_failed_pods: bool = False
    # Training pods: seconds between SIGTERM and SIGKILL, so the trainer can write its checkpoint.
    training_termination_grace_seconds: int = 120
    # The run-time budget alert fires this long after a run's own timeout_minutes (plus its GPU wait).
    training_budget_margin_minutes: int = 30
    training_budget_poll_seconds: float = 60.0  # how often watch_run_budget looks (reschedule mode)
    # How often a training run that waits for GPUs looks again (a deferral, not a retry).
    training_gpu_wait_poll_seconds: float = 60.0

    # Links in alerts point here.
    airflow_base_url: str = "http://localhost:8080"

    # Health checks and alerting (issue 6).
    health_checks_path: str = ""  # empty: the packaged mlops/health/checks.yaml
    health_schedule: str = "*/5 * * * *"
    health_state_bucket: str = ""  # empty: artifacts_bucket
    health_state_key: str = "health/alert-state.json"
    health_digest_hour_utc: int = 9
    airflow_api_url: str = ""  # empty: airflow_base_url
    prometheus_url: str = ""  # empty: the optional Prometheus checks are skipped
    health_model_service: str = ""  # the model whose active Service the default checks probe; empty: skip

    # Alerting (issue 15).
    alert_delivery_deadline_seconds: float = 20.0  # total per delivery, far inside the tasks' 60 s timeout
    alert_repeat_interval_seconds: int = 4 * 3600  # re-notify a still-firing alert (Alertmanager's default)
    health_passes_before_resolve: int = 2  # consecutive passes before a firing alert resolves
    health_sweep_deadline_seconds: float = 90.0  # the whole sweep; inside run_checks' 2 min timeout
    health_heartbeat_url: str = ""  # pinged after each sweep (healthchecks.io style); empty: none
    health_check_gpu_nodes: bool = False  # needs helm-values/platform/optional/32-clusterrole-gpu-nodes.yaml
    health_silences_key: str = "health/silences.json"  # beside the alert state
    health_incidents_prefix: str = "health/task-incidents/"  # open task-failure incidents
    alert_sink: str = "direct"  # direct: Slack + PagerDuty; alertmanager: post to alertmanager_url
    alertmanager_url: str = ""

    # Batch-job metrics (backups, training) are pushed here; empty: logged, not pushed.
    pushgateway_url: str = ""

    # Backups (issue 5).
    pg_bin: str = ""  # directory of pg_dump/pg_restore; empty: found on PATH
    backup_pg_compress: str = "1"  # pg_dump --compress: gzip 0-9; pg_dump 16+: lz4, zstd[:N]
    backup_databases: str = ""  # comma-separated; empty: the postgres connection's database
    backup_verify_conn_id: str = ""  # scratch server for restore tests (required unless the next is set)
    backup_verify_on_source: bool = False  # opt-in: restore tests on the source server (WAL, 2x disk)
    backup_globals: bool = True  # pg_dumpall --globals-only each run, restored before the databases
    backup_globals_with_passwords: bool = False  # keep role password hashes in the globals backup
    backup_lock_wait_timeout: str = "300s"  # pg_dump --lock-wait-timeout; empty: wait forever
    backup_retention_max_delete_fraction: float = 0.5  # of a series' backup dates, per run
    backup_orphan_min_age_hours: int = 24  # dumps without a manifest older than this are swept
    backup_abort_incomplete_upload_days: int = 1  # lifecycle rule on the backup bucket
    backup_kube_custom_resources: str = (
        ""  # comma-separated group/version/plural, e.g. kubeflow.org/v1/notebooks
    )
    backup_sse: str = "AES256"  # none | AES256 | aws:kms
    backup_kms_key_id: str = ""  # with backup_sse=aws:kms; empty: the account's default KMS key
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4
    backup_keep_monthly: int = 6
    backup_kube_namespaces: str = ""  # comma-separated, exported besides the training/serving ones
    artifacts_prefix: str = "models/"
    artifacts_sync_workers: int = 16
    artifacts_max_delete_fraction: float = 0.1
    artifacts_full_check_days: int = 7  # how often the sync also lists the backup side
    artifacts_retired_grace_days: int = 30  # copies the source deleted or overwrote are kept this long

    # Blue-green promotion and the model server (issue 4).
    serving_access: str = (
        "proxy"  # proxy: via the Kubernetes API service proxy; direct: in-cluster Service DNS
    )
    # direct: the Service's address; {service}, {namespace} and {port} are filled in (a cluster
    # with another DNS domain sets e.g. http://{service}.{namespace}.svc.example.internal:{port}).
    serving_direct_url: str = "http://{service}.{namespace}.svc:{port}"
    model_server_replicas: int = 2
    model_server_max_replicas: int = 6
    model_server_progress_deadline_seconds: int = 600
    model_server_s3_secret: str = (
        ""  # Secret (keys as trainer_s3_secret) for the server pods; empty: IRSA/node role
    )
    # The model servers' service account (IRSA: its role-arn annotation gives them S3 access).
    model_server_service_account: str = "mlops-model-server"
    model_server_s3_endpoint: str = ""  # empty: the AWS connection's endpoint_url (none for AWS S3)
    promotion_min_accuracy: float = 0.85  # the platform alert rule's threshold
    promotion_accuracy_tolerance: float = 0.02  # how far below production a candidate may be
    promotion_smoke_tolerance: float = (
        0.1  # served accuracy on held-out samples may trail the minimum by this
    )
    promotion_max_error_rate: float = 0.01  # Prometheus gate (when prometheus_url is set)
    promotion_max_p95_seconds: float = 0.25
    promotion_allow_no_metrics: bool = False  # true: a Prometheus query without data passes the gate
    promotion_metrics_wait_seconds: float = 60.0  # pre-promotion: wait this long for the first scrape
    promotion_analysis_failure_limit: int = 3  # consecutive failed post-promotion rounds that fail it
    promotion_rollout_timeout_seconds: int = 900
    promotion_poll_seconds: float = 2.0
    promotion_lease_seconds: int = 7200


def _coerce(raw: str, current: object) -> object:
    if isinstance(current, bool):
        if raw.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.strip().lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    return raw


def get_settings(environ: dict[str, str] | None = None) -> Settings:
    """Return the settings, with ``MLOPS_*`` environment overrides applied.

    Raises ``ValueError`` naming the variable when an override cannot be parsed.
    """
    env = os.environ if environ is None else environ
    defaults = Settings()
    overrides: dict[str, object] = {}
    for field in fields(Settings):
        name = f"MLOPS_{field.name.upper()}"
        if name in env:
            try:
                overrides[field.name] = _coerce(env[name], getattr(defaults, field.name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
    return Settings(**overrides)  # type: ignore[arg-type]
