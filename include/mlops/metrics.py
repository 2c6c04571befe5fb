"""Metrics of batch jobs (backups, training), pushed to a Prometheus Pushgateway.

A batch job is gone before Prometheus could scrape it, so it pushes its results to a
Pushgateway, which Prometheus scrapes with ``honor_labels: true`` (the pattern the
Prometheus documentation gives for batch jobs). Each push names a *group* (the job plus
a grouping key such as ``{"database": "airflow"}``); a push only ever touches its own
group, so one database's push never deletes another's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway

from mlops.settings import get_settings

log = logging.getLogger(__name__)

# metric name -> (value, help text)
Metrics = Mapping[str, tuple[float, str]]


def push(
    job: str,
    grouping_key: Mapping[str, str],
    metrics: Metrics,
    *,
    replace: bool = False,
    gateway: str | None = None,
    timeout: float = 10.0,
) -> bool:
    """Push ``metrics`` as gauges to the group ``job`` + ``grouping_key``; True when pushed.

    By default only the metrics named here are replaced within the group (PushAdd,
    HTTP POST); ``replace=True`` replaces the whole group (HTTP PUT). Other groups are
    never touched either way. The gateway is ``gateway`` or the ``MLOPS_PUSHGATEWAY_URL``
    setting; when neither is set the metrics are logged and nothing is pushed (False).
    An unreachable or refusing gateway raises (``urllib.error.URLError``/``HTTPError``).
    """
    url = gateway if gateway is not None else get_settings().pushgateway_url
    summary = ", ".join(f"{name}={value:g}" for name, (value, _) in sorted(metrics.items()))
    if not url:
        log.info("MLOPS_PUSHGATEWAY_URL is not set; not pushing %s %s: %s", job, dict(grouping_key), summary)
        return False
    registry = CollectorRegistry()
    for name, (value, help_text) in metrics.items():
        Gauge(name, help_text, registry=registry).set(value)
    send = push_to_gateway if replace else pushadd_to_gateway
    send(url, job=job, registry=registry, grouping_key=dict(grouping_key), timeout=timeout)
    log.info("pushed to %s: %s %s: %s", url, job, dict(grouping_key), summary)
    return True
