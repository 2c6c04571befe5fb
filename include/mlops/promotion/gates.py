"""Promotion gates: what must hold before traffic moves to a candidate, and while it serves.

Pre-promotion (through the preview Service): ``/ready``; ``/version`` is the candidate's; every
held-out sample of the version's ``samples.json`` is sent (in chunks the server accepts) and the
answers must be accurate enough against the labels (smoke) and equal to the trainer's own
predictions (parity); the model-quality gate (accuracy at or above an absolute minimum and not
worse than production by more than a tolerance); optionally a Prometheus gate on error rate and
p95 latency, where a query without data fails (as in Flagger) unless ``allow_no_metrics`` is set.

Post-promotion: the same live checks, Prometheus included, through the active Service at every
round of an analysis window. The analysis fails when ``failure_limit`` rounds in a row fail (Argo
Rollouts' ``failureLimit``/``consecutiveErrorLimit``); a shorter failing streak is reported but
tolerated, and a window never ends on a failing round: it goes on until a round passes or the
limit is reached.

The model server is reached through a :class:`ServiceClient`: by default through the Kubernetes
API's service proxy (works from a laptop and from any cluster, with the connection's
credentials), or directly at ``http://{service}.{namespace}.svc:{port}`` from inside the cluster.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mlops.samples import parse_predicted, parse_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One gate's verdict."""

    name: str
    ok: bool
    detail: str
    value: float | None = None  # the measured figure, where there is one (smoke: the served accuracy)


class GateFailed(RuntimeError):
    """At least one gate failed; ``checks`` has every verdict."""

    def __init__(self, stage: str, checks: list[Check]):
        self.checks = checks
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        super().__init__(f"{stage} analysis failed: {failed}")


@dataclass(frozen=True)
class Gates:
    """Thresholds and limits; defaults as in the settings (``promotion_*``)."""

    min_accuracy: float = 0.85
    accuracy_tolerance: float = 0.02
    smoke_tolerance: float = 0.1
    max_error_rate: float = 0.01
    max_p95_seconds: float = 0.25
    allow_no_metrics: bool = False
    metrics_wait_seconds: float = 60.0
    failure_limit: int = 3

    def __post_init__(self) -> None:
        if self.failure_limit < 1:
            raise ValueError(f"failure_limit must be at least 1, got {self.failure_limit}")

    @classmethod
    def from_settings(cls) -> Gates:
        from mlops.settings import get_settings

        s = get_settings()
        return cls(
            min_accuracy=s.promotion_min_accuracy,
            accuracy_tolerance=s.promotion_accuracy_tolerance,
            smoke_tolerance=s.promotion_smoke_tolerance,
            max_error_rate=s.promotion_max_error_rate,
            max_p95_seconds=s.promotion_max_p95_seconds,
            allow_no_metrics=s.promotion_allow_no_metrics,
            metrics_wait_seconds=s.promotion_metrics_wait_seconds,
            failure_limit=s.promotion_analysis_failure_limit,
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

    settings = get_settings()
    mode = mode or settings.serving_access
    if mode == "direct":
        return DirectServiceClient(
            settings.serving_direct_url.format(service=service, namespace=namespace, port=SERVICE_PORT)
        )
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
    """Held-out inputs, their labels and, when the trainer wrote them, its own predictions."""

    inputs: list[list[float]]
    labels: list[int]
    predicted: list[int] | None = None

    @classmethod
    def parse(cls, doc: Any) -> Samples:
        """Read ``samples.json`` (format: :mod:`mlops.samples`)."""
        inputs, labels = parse_samples(doc)
        return cls(inputs, labels, parse_predicted(doc))


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


# One request stays well under the model server's limits (MAX_BATCH 1024 rows, MAX_BODY_BYTES 8 MiB).
MAX_ROWS_PER_REQUEST = 256
MAX_BYTES_PER_REQUEST = 1024 * 1024
PARITY_INDICES_SHOWN = 5


def request_chunks(
    inputs: Sequence[Sequence[float]],
    max_rows: int = MAX_ROWS_PER_REQUEST,
    max_bytes: int = MAX_BYTES_PER_REQUEST,
) -> Iterator[tuple[int, int]]:
    """``(start, end)`` slices covering every input in order, each at most ``max_rows`` rows and
    about ``max_bytes`` of JSON (a single row larger than that still goes alone)."""
    start, size = 0, 0
    for i, row in enumerate(inputs):
        row_bytes = len(json.dumps(row)) + 1
        if i > start and (i - start >= max_rows or size + row_bytes > max_bytes):
            yield start, i
            start, size = i, 0
        size += row_bytes
    if start < len(inputs):
        yield start, len(inputs)


def served_predictions(client: ServiceClient, version: str, inputs: list[list[float]]) -> list[int] | Check:
    """The classes the server answers for every input, or the failed ``smoke`` check that stopped it."""
    served: list[int] = []
    for start, end in request_chunks(inputs):
        rows = inputs[start:end]
        status, body = _safe_request(client, "POST", "/predict", {"instances": rows})
        if status != 200 or not isinstance(body, dict):
            return Check(
                "smoke", False, f"/predict of samples {start}-{end - 1} answered {status}: {str(body)[:300]}"
            )
        predictions = body.get("predictions")
        if (
            not isinstance(predictions, list)
            or len(predictions) != len(rows)
            or not all(isinstance(p, int) and 0 <= p <= 9 for p in predictions)
        ):
            return Check("smoke", False, f"/predict returned malformed predictions: {str(predictions)[:200]}")
        if body.get("model_version") != version:
            return Check(
                "smoke",
                False,
                f"/predict answered from version {body.get('model_version')!r}, expected {version!r}",
            )
        served.extend(predictions)
    return served


def smoke_check(served: Sequence[int], labels: Sequence[int], min_accuracy: float) -> Check:
    """Served accuracy against the labels, at or above ``min_accuracy``."""
    accuracy = sum(p == y for p, y in zip(served, labels, strict=True)) / len(labels)
    ok = accuracy >= min_accuracy
    return Check(
        "smoke",
        ok,
        f"{len(labels)} held-out samples, served accuracy {accuracy:.3f} "
        f"({'>=' if ok else '<'} {min_accuracy:.3f})",
        accuracy,
    )


def parity_check(served: Sequence[int], predicted: Sequence[int]) -> Check:
    """The served classes equal the trainer's own predictions for the same inputs, on every sample."""
    differ = [i for i, (a, b) in enumerate(zip(served, predicted, strict=True)) if a != b]
    if differ:
        first = ", ".join(str(i) for i in differ[:PARITY_INDICES_SHOWN])
        return Check(
            "parity",
            False,
            f"{len(differ)} of {len(predicted)} served predictions differ from the trainer's; "
            f"first at indices {first}",
        )
    return Check(
        "parity", True, f"{len(predicted)} of {len(predicted)} served predictions match the trainer's"
    )


def prediction_checks(
    client: ServiceClient, version: str, samples: Samples, min_accuracy: float
) -> list[Check]:
    """Send every held-out sample: ``smoke`` (accuracy vs labels) and, when the trainer wrote its
    predictions, ``parity`` (the same classes as the trainer). A failed request is one failed smoke check."""
    served = served_predictions(client, version, samples.inputs)
    if isinstance(served, Check):
        return [served]
    smoke = smoke_check(served, samples.labels, min_accuracy)
    if samples.predicted is None:
        return [
            Check(
                "smoke",
                smoke.ok,
                smoke.detail + "; samples.json has no trainer predictions: parity not checked",
                smoke.value,
            )
        ]
    return [smoke, parity_check(served, samples.predicted)]


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

    def check(
        self, model: str, version: str, gates: Gates, wait_seconds: float = 0.0, poll_seconds: float = 2.0
    ) -> Check:
        """Query and judge; while a query has no data, query again for up to ``wait_seconds``."""
        queries = self.queries(model, version)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                values = {name: self.query(q) for name, q in queries.items()}
            except Exception as exc:
                return Check("prometheus", False, f"query failed: {type(exc).__name__}: {exc}")
            remaining = deadline - time.monotonic()
            if gates.allow_no_metrics or None not in values.values() or remaining <= 0:
                break
            time.sleep(min(poll_seconds, remaining))
        check = evaluate_prometheus(values, gates, queries)
        if not check.ok and wait_seconds > 0 and None in values.values():
            return Check(check.name, False, f"{check.detail} (after waiting {wait_seconds:g} s for a scrape)")
        return check


def evaluate_prometheus(
    values: dict[str, float | None], gates: Gates, queries: dict[str, str] | None = None
) -> Check:
    """Judge the error rate and p95. A query without data (no series, or NaN) fails and names the
    query, unless ``gates.allow_no_metrics``: a candidate nobody scraped has proven nothing."""
    error_rate, p95 = values.get("error_rate"), values.get("p95_seconds")
    problems = []
    if error_rate is not None and error_rate > gates.max_error_rate:
        problems.append(f"error rate {error_rate:.4f} > {gates.max_error_rate:.4f}")
    if p95 is not None and p95 > gates.max_p95_seconds:
        problems.append(f"p95 latency {p95:.3f} s > {gates.max_p95_seconds:.3f} s")
    if not gates.allow_no_metrics:
        for name, value in values.items():
            if value is None:
                query = (queries or {}).get(name)
                problems.append(f"{name}: no data" + (f" (query: {query})" if query else ""))
    if problems:
        return Check("prometheus", False, "; ".join(problems))
    shown = ", ".join(
        f"{k} {v:.4f}" if v is not None else f"{k} no data (allowed)" for k, v in values.items()
    )
    return Check("prometheus", True, shown)


# -- the analyses -----------------------------------------------------------------------------------
@dataclass
class AnalysisReport:
    stage: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    rounds: int = 0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "rounds": self.rounds,
            "checks": [asdict(c) for c in self.checks],
        }

    def raise_if_failed(self) -> AnalysisReport:
        if not self.ok:
            raise GateFailed(self.stage, self.checks)
        return self


def live_checks(client: ServiceClient, version: str, samples: Samples, gates: Gates) -> list[Check]:
    """Ready, version, then smoke and parity on every held-out sample; stops at the first failure of
    ready or version (nothing after them can be trusted)."""
    checks = [check_ready(client)]
    if checks[-1].ok:
        checks.append(check_version(client, version))
    if checks[-1].ok:
        checks.extend(prediction_checks(client, version, samples, gates.min_accuracy - gates.smoke_tolerance))
    return checks


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
    """Every pre-promotion gate, through the preview Service; stops at the first live failure.

    The Prometheus gate waits up to ``gates.metrics_wait_seconds`` for the candidate's first scraped
    metrics (the smoke requests are its first traffic), then judges them.
    """
    started = time.perf_counter()
    report = AnalysisReport("pre-promotion", rounds=1)
    report.checks.append(quality_gate(candidate_accuracy, production_accuracy, gates))
    report.checks.extend(live_checks(client, version, samples, gates))
    if prometheus is not None and report.ok:
        report.checks.append(prometheus.check(model, version, gates, wait_seconds=gates.metrics_wait_seconds))
    report.seconds = time.perf_counter() - started
    for c in report.checks:
        log.info("pre-promotion %s: %s %s", c.name, "ok" if c.ok else "FAILED", c.detail)
    return report


class RoundHistory:
    """The rounds of an analysis, judged against a limit of consecutive failed rounds."""

    def __init__(self, limit: int):
        self.limit = limit
        self.rounds = 0
        self.failed_rounds: list[tuple[int, list[Check]]] = []  # every failed round, with its failures
        self.streak: list[tuple[int, list[Check]]] = []  # the current run of consecutive failed rounds

    def record(self, checks: list[Check]) -> None:
        """Add one round's checks."""
        self.rounds += 1
        failures = [c for c in checks if not c.ok]
        if failures:
            self.failed_rounds.append((self.rounds, failures))
            self.streak.append((self.rounds, failures))
        else:
            self.streak = []

    @property
    def failed(self) -> bool:
        """``limit`` rounds in a row have failed."""
        return len(self.streak) >= self.limit

    def verdicts(self) -> list[Check]:
        """One failed check per check that failed during the streak, listing its rounds and last detail."""
        first, last = self.streak[0][0], self.streak[-1][0]
        by_name: dict[str, tuple[list[int], str]] = {}
        for number, failures in self.streak:
            for c in failures:
                rounds, _ = by_name.setdefault(c.name, ([], ""))
                rounds.append(number)
                by_name[c.name] = (rounds, c.detail)
        return [
            Check(
                name,
                False,
                f"failed in rounds {', '.join(map(str, rounds))} of {len(self.streak)} consecutive failed "
                f"rounds {first}-{last} (failure limit {self.limit}); last: {detail}",
            )
            for name, (rounds, detail) in by_name.items()
        ]

    def summary(self) -> str:
        """The tolerated failed rounds, for a passing analysis."""
        if not self.failed_rounds:
            return "no failed round"
        count = len(self.failed_rounds)
        listed = ", ".join(f"round {number}" for number, _ in self.failed_rounds)
        last = "; ".join(f"{c.name}: {c.detail}" for c in self.failed_rounds[-1][1])
        return (
            f"{count} failed round{'s' if count > 1 else ''} under the failure limit {self.limit}: "
            f"{listed} (last: {last})"
        )


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
    """Repeat the live checks (Prometheus too, when configured) through the active Service at every
    round for ``duration_seconds`` (at least one round).

    Fails when ``gates.failure_limit`` rounds in a row fail; the window goes on past its end while a
    failing streak lasts, so it ends on a passing round or on the limit.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + duration_seconds
    report = AnalysisReport("post-promotion")
    history = RoundHistory(gates.failure_limit)
    while True:
        checks = live_checks(client, version, samples, gates)
        if prometheus is not None:
            checks.append(prometheus.check(model, version, gates))
        history.record(checks)
        if history.failed:
            report.checks.extend(history.verdicts())
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0 and not history.streak:
            names = "/".join(c.name for c in checks)
            report.checks.append(
                Check(
                    "window",
                    True,
                    f"{history.rounds} rounds of {names} checks over {duration_seconds:.0f} s; "
                    f"{history.summary()}",
                )
            )
            report.checks.extend(checks)  # the last round's verdicts: the figures that hold now
            break
        time.sleep(interval_seconds if remaining <= 0 else min(interval_seconds, remaining))
    report.rounds = history.rounds
    report.seconds = time.perf_counter() - started
    for c in report.checks:
        log.info("post-promotion %s: %s %s", c.name, "ok" if c.ok else "FAILED", c.detail)
    return report
