"""Backend clients kept between requests: building a boto3 or Kubernetes client costs far more than
the few reads a page makes. A client is rebuilt when its connection's definition changes or after
``MAX_AGE_SECONDS``, so rotated credentials are picked up."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_AGE_SECONDS = 300.0
_CLIENTS: dict[tuple, tuple[float, Any]] = {}
_LOCK = threading.Lock()


def _kept(key: tuple, build: Callable[[], Any]) -> Any:
    now = time.monotonic()
    with _LOCK:
        hit = _CLIENTS.get(key)
    if hit is not None and now - hit[0] < MAX_AGE_SECONDS:
        return hit[1]
    client = build()
    with _LOCK:
        _CLIENTS[key] = (now, client)
    return client


def _conn_key(conn_id: str) -> tuple:
    return (conn_id, os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"))


def s3(settings: Any) -> Any:
    """A boto3 S3 client of the ``aws_default`` connection (the DAGs' own ``s3_client``)."""
    from mlops.backups.s3 import s3_client

    return _kept(("s3", *_conn_key(settings.aws_conn_id)), lambda: s3_client(settings))


def cluster(settings: Any) -> Any:
    """The serving namespace's :class:`~mlops.promotion.kube.Cluster`, without retries: the page shows
    an error at once rather than retrying for seconds."""
    from mlops.promotion.kube import Cluster, RetryPolicy

    def build() -> Any:
        built = Cluster.from_connection(settings.serving_namespace, settings.kubernetes_conn_id)
        built.retry = RetryPolicy(attempts=1)
        return built

    key = ("kube", settings.serving_namespace, *_conn_key(settings.kubernetes_conn_id))
    return _kept(key, build)


def forget() -> None:
    """Drop every kept client."""
    with _LOCK:
        _CLIENTS.clear()
