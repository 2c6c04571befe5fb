"""Promotion gates: what must hold before traffic moves to a candidate, and while it serves.

Pre-promotion (through the preview Service): ``/ready``; ``/version`` is the candidate's; smoke
predictions on the version's held-out samples; the model-quality gate (accuracy at or above an
absolute minimum and not worse than production by more than a tolerance); optionally a
Prometheus gate on error rate and p95 latency. Post-promotion: the same live checks through the
active Service, repeated over an analysis window.

The model server is reached through a :class:`ServiceClient`: by default through the Kubernetes
API's service proxy (works from a laptop and from any cluster, with the connection's
credentials), or directly at ``http://{service}.{namespace}.svc:{port}`` from inside the cluster.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mlops.samples import parse_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One gate's verdict."""

    name: str
    ok: bool
    detail: str


class GateFailed(RuntimeError):
    """At least one gate failed; ``checks`` has every verdict."""

    def __init__(self, stage: str, checks: list[Check]):
        self.checks = checks
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        super().__init__(f"{stage} analysis failed: {failed}")


@dataclass(frozen=True)
class Gates:
    """Thresholds; defaults from the settings (``promotion_*``)."""

    min_accuracy: float = 0.85
    accuracy_tolerance: float = 0.02
    smoke_tolerance: float = 0.1
    max_error_rate: float = 0.01
    max_p95_seconds: float = 0.25

    @classmethod
    def from_settings(cls) -> Gates:
        from mlops.settings import get_settings

        s = get_settings()
        return cls(
            s.promotion_min_accuracy,
            s.promotion_accuracy_tolerance,
            s.promotion_smoke_tolerance,
            s.promotion_max_error_rate,
            s.promotion_max_p95_seconds,
        )


# -- reaching the model server ----------------------------------------------------------------------
class ServiceClient(Protocol):
    """HTTP to one Service of the model server; returns (status, parsed JSON body or text)."""

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...


class ProxyServiceClient:
    """Through ``/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/...`` with the official client."""

    def __init__(
        self, api_client: Any, namespace: str, service: str, port: str = "http", timeout: float = 10
    ):
        self.api_client, self.namespace, self.service, self.port = api_client, namespace, service, port
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        from kubernetes.client.exceptions import ApiException

        resource = f"/api/v1/namespaces/{self.namespace}/services/{self.service}:{self.port}/proxy{path}"
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self.api_client.call_api(
                resource,
                method,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            return exc.status, _parse(exc.body)
        return response.status, _parse(response.data)


class DirectServiceClient:
    """Plain HTTP to the Service's cluster DNS name (for workers that run inside the cluster)."""

    def __init__(self, base_url: str, timeout: float = 10):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import httpx

        response = httpx.request(method, self.base_url + path, json=body, timeout=self.timeout)
        return response.status_code, _parse(response.content)


def service_client(api_client: Any, namespace: str, service: str, mode: str | None = None) -> ServiceClient:
    """The client for ``settings.serving_access`` (``proxy`` or ``direct``)."""
    from mlops.promotion.manifests.render import SERVICE_PORT
    from mlops.settings import get_settings

    mode = mode or get_settings().serving_access
    if mode == "direct":
        return DirectServiceClient(f"http://{service}.{namespace}.svc:{SERVICE_PORT}")
    if mode == "proxy":
        return ProxyServiceClient(api_client, namespace, service)
    raise ValueError(f"serving_access must be 'proxy' or 'direct', got {mode!r}")


def _parse(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except ValueError:
        return text


def _safe_request(client: ServiceClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        return client.request(method, path, body)
    except Exception as exc:  # a transport error is a failed check, not a crash of the analysis
        return 0, f"{type(exc).__name__}: {exc}"


# -- held-out samples -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Samples:
    inputs: list[list[float]]
    labels: list[int]

    @classmethod
    def parse(cls, doc: Any) -> Samples:
        """Read ``samples.json`` (format: :mod:`mlops.samples`)."""
        inputs, labels = parse_samples(doc)
        return cls(inputs, labels)


def load_samples(s3_client: Any, artifact_uri: str) -> Samples:
    """The version's ``samples.json`` from its artifact directory ``s3://bucket/models/m/versions/v/``."""
    bucket, _, prefix = artifact_uri.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/samples.json"
    return Samples.parse(json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()))


# -- the checks -------------------------------------------------------------------------------------
def check_ready(client: ServiceClient) -> Check:
    status, body = _safe_request(client, "GET", "/ready")
    return Check("ready", status == 200, f"/ready answered {status}" + ("" if status == 200 else f": {body}"))


def check_version(client: ServiceClient, version: str) -> Check:
    status, body = _safe_request(client, "GET", "/version")
    served = body.get("model_version") if isinstance(body, dict) else None
    return Check(
        "version",
        status == 200 and served == version,
        f"serves version {served!r}" + ("" if served == version else f", expected {version!r} ({status})"),
    )


def smoke_predictions(
    client: ServiceClient, version: str, samples: Samples, min_accuracy: float, batch: int = 256
) -> tuple[Check, float | None]:
    """Send the held-out samples; every answer must be well formed, from ``version``, and accurate enough.

    Returns the check and the served accuracy (``None`` when a request failed).
    """
    correct = 0
    for start in range(0, len(samples.inputs), batch):
        rows, labels = samples.inputs[start : start + batch], samples.labels[start : start + batch]
        status, body = _safe_request(client, "POST", "/predict", {"instances": rows})
        if status != 200 or not isinstance(body, dict):
            return Check("smoke", False, f"/predict answered {status}: {str(body)[:300]}"), None
        predictions = body.get("predictions")
        if (
            not isinstance(predictions, list)
            or len(predictions) != len(rows)
            or not all(isinstance(p, int) and 0 <= p <= 9 for p in predictions)
        ):
            return Check(
                "smoke", False, f"/predict returned malformed predictions: {str(predictions)[:200]}"
            ), None
        if body.get("model_version") != version:
            return Check(
                "smoke",
                False,
                f"/predict answered from version {body.get('model_version')!r}, expected {version!r}",
            ), None
        correct += sum(p == y for p, y in zip(predictions, labels, strict=True))
    served = correct / len(samples.labels)
    ok = served >= min_accuracy
    return Check(
        "smoke",
        ok,
        f"{len(samples.labels)} held-out samples, served accuracy {served:.3f} "
        f"({'>=' if ok else '<'} {min_accuracy:.3f})",
    ), served


def quality_gate(candidate_accuracy: float | None, production_accuracy: float | None, gates: Gates) -> Check:
    """Candidate accuracy >= the absolute minimum, and >= production's minus the tolerance."""
    if candidate_accuracy is None or not math.isfinite(candidate_accuracy):
        return Check("quality", False, "the candidate has no accuracy in its metrics")
    problems = []
    if candidate_accuracy < gates.min_accuracy:
        problems.append(f"accuracy {candidate_accuracy:.4f} < minimum {gates.min_accuracy:.4f}")
    if (
        production_accuracy is not None
        and candidate_accuracy < production_accuracy - gates.accuracy_tolerance
    ):
        problems.append(
            f"accuracy {candidate_accuracy:.4f} is worse than production's {production_accuracy:.4f} "
            f"by more than {gates.accuracy_tolerance:.4f}"
        )
    if problems:
        return Check("quality", False, "; ".join(problems))
    versus = (
        f", production {production_accuracy:.4f}"
        if production_accuracy is not None
        else ", no production yet"
    )
    return Check("quality", True, f"accuracy {candidate_accuracy:.4f} >= {gates.min_accuracy:.4f}{versus}")


@dataclass
class PrometheusGate:
    """Error rate and p95 latency of one model version, from the model server's metrics."""

    url: str
    window: str = "5m"
    timeout: float = 10

    def queries(self, model: str, version: str) -> dict[str, str]:
        sel = f'model="{model}",version="{version}"'
        return {
            # "or vector(0)": traffic without any 5xx is a 0 % error rate, not "no data".
            "error_rate": (
                f'(sum(rate(mlops_model_requests_total{{{sel},status=~"5.."}}[{self.window}]))'
                " or vector(0)) / "
                f"sum(rate(mlops_model_requests_total{{{sel}}}[{self.window}]))"
            ),
            "p95_seconds": (
                f"histogram_quantile(0.95, sum by (le) "
                f"(rate(mlops_model_request_duration_seconds_bucket{{{sel}}}[{self.window}])))"
            ),
        }

    def query(self, promql: str) -> float | None:
        """The scalar value of an instant query; ``None`` when there is no data (or NaN)."""
        import httpx

        response = httpx.get(
            f"{self.url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=self.timeout
        )
        response.raise_for_status()
        result = response.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def check(self, model: str, version: str, gates: Gates) -> Check:
        try:
            values = {name: self.query(q) for name, q in self.queries(model, version).items()}
        except Exception as exc:
            return Check("prometheus", False, f"query failed: {type(exc).__name__}: {exc}")
        return evaluate_prometheus(values, gates)


def evaluate_prometheus(values: dict[str, float | None], gates: Gates) -> Check:
    """Judge the error rate and p95; a window without traffic passes and says so."""
    error_rate, p95 = values.get("error_rate"), values.get("p95_seconds")
    problems = []
    if error_rate is not None and error_rate > gates.max_error_rate:
        problems.append(f"error rate {error_rate:.4f} > {gates.max_error_rate:.4f}")
    if p95 is not None and p95 > gates.max_p95_seconds:
        problems.append(f"p95 latency {p95:.3f} s > {gates.max_p95_seconds:.3f} s")
    if problems:
        return Check("prometheus", False, "; ".join(problems))
    shown = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} no data" for k, v in values.items())
    return Check("prometheus", True, shown)


# -- the analyses -----------------------------------------------------------------------------------
@dataclass
class AnalysisReport:
    stage: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "checks": [asdict(c) for c in self.checks],
        }

    def raise_if_failed(self) -> AnalysisReport:
        if not self.ok:
            raise GateFailed(self.stage, self.checks)
        return self


def pre_promotion(
    client: ServiceClient,
    model: str,
    version: str,
    samples: Samples,
    candidate_accuracy: float | None,
    production_accuracy: float | None,
    gates: Gates,
    prometheus: PrometheusGate | None = None,
) -> AnalysisReport:
    """Every pre-promotion gate, through the preview Service; stops at the first live failure."""
    started = time.perf_counter()
    report = AnalysisReport("pre-promotion")
    report.checks.append(quality_gate(candidate_accuracy, production_accuracy, gates))
    for check in (lambda: check_ready(client), lambda: check_version(client, version)):
        report.checks.append(check())
        if not report.checks[-1].ok:
            report.seconds = time.perf_counter() - started
            return report
    report.checks.append(
        smoke_predictions(client, version, samples, gates.min_accuracy - gates.smoke_tolerance)[0]
    )
    if prometheus is not None and report.ok:
        report.checks.append(prometheus.check(model, version, gates))
    report.seconds = time.perf_counter() - started
    for c in report.checks:
        log.info("pre-promotion %s: %s %s", c.name, "ok" if c.ok else "FAILED", c.detail)
    return report


def analysis_window(
    client: ServiceClient,
    model: str,
    version: str,
    samples: Samples,
    gates: Gates,
    duration_seconds: float,
    interval_seconds: float = 5.0,
    prometheus: PrometheusGate | None = None,
) -> AnalysisReport:
    """Repeat the live checks through the active Service for ``duration_seconds`` (at least once).

    Stops at the first failure. The Prometheus gate, when configured, is judged at the end of the window.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + duration_seconds
    report = AnalysisReport("post-promotion")
    small = Samples(samples.inputs[:32], samples.labels[:32])
    rounds = 0
    while True:
        rounds += 1
        round_checks = [
            check_ready(client),
            check_version(client, version),
            smoke_predictions(client, version, small, gates.min_accuracy - gates.smoke_tolerance)[0],
        ]
        failed = [c for c in round_checks if not c.ok]
        if failed:
            report.checks.extend(Check(c.name, False, f"round {rounds}: {c.detail}") for c in failed)
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            report.checks.append(
                Check(
                    "window",
                    True,
                    f"{rounds} rounds of ready/version/smoke checks passed over {duration_seconds:.0f} s",
                )
            )
            if prometheus is not None:
                report.checks.append(prometheus.check(model, version, gates))
            break
        time.sleep(min(interval_seconds, remaining))
    report.seconds = time.perf_counter() - started
    for c in report.checks:
        log.info("post-promotion %s: %s %s", c.name, "ok" if c.ok else "FAILED", c.detail)
    return report
