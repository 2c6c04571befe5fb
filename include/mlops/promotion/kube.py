"""The Kubernetes API of the serving namespace, with the retry and error policy of every promotion step.

Writes that depend on what was read carry ``metadata.resourceVersion`` (optimistic concurrency: the
API answers 409 if anything changed in between). 409s, 429s, 5xx and connection errors are retried
with exponential backoff; a 403 raises :class:`RbacDenied` naming the verb and resource that the
service account lacks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mlops.promotion.errors import RbacDenied

log = logging.getLogger(__name__)
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_seconds: float = 0.2
    max_seconds: float = 5.0


class Cluster:
    """The official Kubernetes client for one namespace, with the retry and error policy above."""

    def __init__(self, api_client: Any, namespace: str, retry: RetryPolicy | None = None):
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.retry = retry or RetryPolicy()

    @classmethod
    def from_connection(cls, namespace: str | None = None, conn_id: str | None = None) -> Cluster:
        """Built from the Airflow Kubernetes connection (``settings.kubernetes_conn_id``) at run time."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from mlops.settings import get_settings

        settings = get_settings()
        hook = KubernetesHook(conn_id=conn_id or settings.kubernetes_conn_id)
        return cls(hook.api_client, namespace or settings.serving_namespace)

    def call(
        self,
        verb: str,
        resource: str,
        fn: Callable[..., T],
        *args: Any,
        retry_conflicts: bool = True,
        **kwargs: Any,
    ) -> T:
        """Run one API call; retry 409 (unless ``retry_conflicts`` is False), 429, 5xx and network errors."""
        import urllib3
        from kubernetes.client.exceptions import ApiException
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError):
                return True
            if not isinstance(exc, ApiException):
                return False
            if exc.status == 409:
                return retry_conflicts and _reason(exc) != "AlreadyExists"
            return exc.status == 429 or exc.status >= 500

        def log_retry(state) -> None:
            log.warning(
                "Kubernetes %s %s failed (%s); retry %d of %d",
                verb,
                resource,
                _short(state.outcome.exception()),
                state.attempt_number,
                self.retry.attempts - 1,
            )

        try:
            for attempt in Retrying(
                retry=retry_if_exception(transient),
                stop=stop_after_attempt(self.retry.attempts),
                wait=wait_exponential(multiplier=self.retry.initial_seconds, max=self.retry.max_seconds),
                before_sleep=log_retry,
                reraise=True,
            ):
                with attempt:
                    return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 403:
                group, plural = resource.split("/", 1) if "/" in resource else ("", resource)
                raise RbacDenied(
                    f"Kubernetes API denied '{verb}' on '{plural}' (apiGroup '{group}') in namespace "
                    f"'{self.namespace}' (403 Forbidden: {_message(exc)}). Grant the Airflow service account "
                    f"the RBAC verb '{verb}' on resource '{plural}' in that namespace (helm-values/ RBAC)."
                ) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    # kind -> (RBAC resource "group/plural", client attribute, method suffix) for every kind touched.
    _KINDS: dict[str, tuple[str, str, str]] = {
        "Deployment": ("apps/deployments", "apps", "deployment"),
        "Service": ("services", "core", "service"),
        "HorizontalPodAutoscaler": (
            "autoscaling/horizontalpodautoscalers",
            "autoscaling",
            "horizontal_pod_autoscaler",
        ),
        "PodDisruptionBudget": ("policy/poddisruptionbudgets", "policy", "pod_disruption_budget"),
        "Lease": ("coordination.k8s.io/leases", "coordination", "lease"),
    }

    def _method(self, kind: str, verb: str) -> tuple[str, Callable[..., Any]]:
        """The RBAC resource and the client method for ``verb`` ("read", "create", ...) on ``kind``."""
        resource, api, suffix = self._KINDS[kind]
        return resource, getattr(getattr(self, api), f"{verb}_namespaced_{suffix}")

    # Reads return plain dicts (the JSON the API sent), which the logic below compares directly.
    def read(self, kind: str, name: str) -> dict | None:
        """The object, or ``None`` when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        resource, fn = self._method(kind, "read")
        try:
            response = self.call("get", resource, fn, name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def create(self, doc: dict) -> dict:
        """Create ``doc`` (a 409 AlreadyExists is not retried)."""
        resource, fn = self._method(doc["kind"], "create")
        response = self.call("create", resource, fn, self.namespace, doc, _preload_content=False)
        return json.loads(response.data)

    def replace(self, doc: dict) -> dict:
        """PUT ``doc``, which carries the resourceVersion it was read at (a 409 is not retried here)."""
        name = doc["metadata"]["name"]
        resource, fn = self._method(doc["kind"], "replace")
        response = self.call(
            "update", resource, fn, name, self.namespace, doc, retry_conflicts=False, _preload_content=False
        )
        return json.loads(response.data)

    def patch(self, kind: str, name: str, body: dict, *, guarded: bool) -> dict:
        """JSON merge patch; ``guarded`` patches carry a resourceVersion, so a 409 is not retried here."""
        resource, fn = self._method(kind, "patch")
        response = self.call(
            "patch",
            resource,
            fn,
            name,
            self.namespace,
            body,
            retry_conflicts=not guarded,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        return json.loads(response.data)

    def guarded(self, what: str, fn: Callable[[], T]) -> T:
        """Run a read-check-write ``fn`` again (re-reading) when its guarded write meets a 409."""
        from kubernetes.client.exceptions import ApiException

        delay = self.retry.initial_seconds
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except ApiException as exc:
                if exc.status != 409 or _reason(exc) == "AlreadyExists" or attempt == self.retry.attempts:
                    raise
                log.warning("%s: conflict (%s); re-reading and retrying in %.1f s", what, _short(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_seconds)
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(exc: Any) -> str:
    try:
        return json.loads(exc.body or "{}").get("reason", "")
    except (TypeError, ValueError):
        return ""


def _message(exc: Any) -> str:
    try:
        return json.loads(exc.body or "{}").get("message", "") or str(exc.reason)
    except (TypeError, ValueError):
        return str(getattr(exc, "reason", exc))


def _short(exc: BaseException | None) -> str:
    status = getattr(exc, "status", None)
    return f"{status} {_message(exc)}" if status else f"{type(exc).__name__}: {exc}"
