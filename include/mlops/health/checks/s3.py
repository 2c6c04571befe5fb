"""S3: the bucket answers, and an object written can be read back intact."""

from __future__ import annotations

import secrets
from typing import Any

from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("airflow.providers.amazon.aws.hooks.s3", "botocore.config")

SCHEMA: dict[str, Any] = {
    "required": ["bucket"],
    "properties": {
        "bucket": {"type": "string", "minLength": 3},
        "probe_prefix": {"type": "string"},
        "write_probe": {"type": "boolean"},
    },
}


def s3_client(ctx: CheckContext, timeout: float) -> Any:
    """A boto3 S3 client from the AWS connection, with timeouts bounded by the check's."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"}
    )
    return S3Hook(aws_conn_id=ctx.settings.aws_conn_id, config=config).get_conn()


def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """HEAD the bucket, then put, get and delete a small probe object."""
    bucket = spec.params["bucket"]
    client = s3_client(ctx, spec.timeout_seconds)
    client.head_bucket(Bucket=bucket)
    if not spec.params.get("write_probe", True):
        return [CheckResult(spec.name, bucket, True, f"s3://{bucket}: reachable")]
    key = f"{spec.params.get('probe_prefix', '_health/probe-')}{secrets.token_hex(6)}"
    payload = secrets.token_bytes(64)
    client.put_object(Bucket=bucket, Key=key, Body=payload)
    try:
        read = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    finally:
        client.delete_object(Bucket=bucket, Key=key)
    ok = read == payload
    summary = f"s3://{bucket}: " + ("write/read probe ok" if ok else "probe object read back differs")
    return [CheckResult(spec.name, bucket, ok, summary)]
