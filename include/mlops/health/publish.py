"""Metrics the platform's Prometheus rules read, pushed to the Pushgateway by batch code.

- :func:`publish_model_accuracy`: the serving version's measured accuracy
  (``mlops_model_accuracy{model,version}``), from the promotion gate and scheduled
  evaluations. One group per model, replaced on each push, so only the version now
  serving is reported.
- :func:`count_training_failure`: ``mlops_training_failures_total{dag_id}`` and
  ``mlops_training_last_failure_timestamp_seconds{dag_id}``, from the failure callback.
- :func:`publish_sweep_heartbeat`: ``mlops_health_last_sweep_timestamp_seconds``, the
  health DAG's dead-man's switch (rule ``HealthSweepStale``/``HealthSweepAbsent``).

Without ``MLOPS_PUSHGATEWAY_URL`` each function logs and returns False.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.request

from mlops.metrics import push
from mlops.settings import get_settings

log = logging.getLogger(__name__)

ACCURACY_JOB = "mlops_model_evaluation"
TRAINING_JOB = "mlops_training"
HEALTH_JOB = "mlops_health"


def publish_model_accuracy(model: str, version: str, accuracy: float, source: str = "evaluation") -> bool:
    """Publish the measured ``accuracy`` (0..1) of ``version``, the version serving ``model``.

    Replaces the model's previous push (an older version's accuracy stops being reported).
    """
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    url = get_settings().pushgateway_url
    if not url:
        log.info("MLOPS_PUSHGATEWAY_URL is not set; accuracy of %s %s: %.4f", model, version, accuracy)
        return False
    registry = CollectorRegistry()
    gauge = Gauge(
        "mlops_model_accuracy",
        "Measured accuracy of the serving version on held-out samples.",
        ["version", "source"],
        registry=registry,
    )
    gauge.labels(version, source).set(float(accuracy))
    push_to_gateway(url, job=ACCURACY_JOB, registry=registry, grouping_key={"model": model}, timeout=10)
    return True


def _current_value(url: str, metric: str, labels: dict[str, str]) -> float:
    """The value the Pushgateway exposes for ``metric`` with ``labels`` (0 when absent)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=5) as answer:  # noqa: S310 - the setting's URL
        text = answer.read().decode()
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def count_training_failure(dag_id: str) -> bool:
    """Add one to ``mlops_training_failures_total{dag_id}`` and stamp the failure time.

    The Pushgateway keeps only what was pushed last, so the counter is read back and
    pushed +1; its first push is 1, which is why the rule alerts on the counter's
    appearance as well as on its increase.
    """
    url = get_settings().pushgateway_url
    if not url:
        log.info("MLOPS_PUSHGATEWAY_URL is not set; training failure of %s not counted", dag_id)
        return False
    total = _current_value(url, "mlops_training_failures_total", {"job": TRAINING_JOB, "dag_id": dag_id})
    return push(
        TRAINING_JOB,
        {"dag_id": dag_id},
        {
            "mlops_training_failures_total": (
                total + 1,
                "Failed training tasks, counted by the failure callback.",
            ),
            "mlops_training_last_failure_timestamp_seconds": (
                time.time(),
                "When a training task last failed.",
            ),
        },
    )


def stamp_training_success(dag_id: str) -> bool:
    """``mlops_training_last_success_timestamp_seconds{dag_id}``: ends ``TrainingRunsFailing``."""
    return push(
        TRAINING_JOB,
        {"dag_id": dag_id},
        {"mlops_training_last_success_timestamp_seconds": (time.time(), "Last training task success.")},
    )


def publish_sweep_heartbeat(duration_seconds: float, failing: int) -> bool:
    """The health sweep's heartbeat: its completion time, duration and failing-result count."""
    return push(
        HEALTH_JOB,
        {"dag_id": "mlops_health"},
        {
            "mlops_health_last_sweep_timestamp_seconds": (
                time.time(),
                "When the last health sweep finished.",
            ),
            "mlops_health_sweep_duration_seconds": (duration_seconds, "How long the last health sweep took."),
            "mlops_health_failing_results": (float(failing), "Failing results in the last health sweep."),
        },
    )


def ping_heartbeat_url(url: str, timeout: float = 5.0) -> bool:
    """GET ``url`` (a healthchecks.io-style ping URL); True when it answered 2xx. Never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - the operator's setting
            return 200 <= answer.status < 300
    except Exception as exc:
        log.warning("heartbeat ping to %s failed: %s", url.split("?")[0], exc)
        return False
