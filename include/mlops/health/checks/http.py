"""HTTP(S) endpoint checks, after blackbox_exporter's http prober.

One result per URL, failing on any of: transport error, unexpected status code, a
JSON body predicate that does not hold (or a body that is not JSON), latency above
``max_latency_seconds``, or a TLS certificate expiring within ``tls_min_days``.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from typing import Any

from mlops.health import predicate
from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("httpx", "cryptography.x509")

SCHEMA: dict[str, Any] = {
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://"},
        "method": {"enum": ["GET", "HEAD", "POST"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "expect_status": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        "json": {"type": "array", "items": predicate.SCHEMA},
        "max_latency_seconds": {"type": "number", "exclusiveMinimum": 0},
        "tls_min_days": {"type": "number", "minimum": 0},
        "verify_tls": {"type": "boolean"},
        "ca_file": {"type": "string"},
    },
}
_BODY_EXCERPT = 500


def _cert_days_left(response: Any) -> float | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509

    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
    return (not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400


async def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """Probe ``url`` once and report every expectation it misses."""
    import httpx

    p = spec.params
    url = p["url"]
    verify: bool | str = p.get("ca_file") or p.get("verify_tls", True)
    client = ctx.http_client(verify)
    problems: list[str] = []
    details: dict[str, Any] = {"url": url}
    started = time.perf_counter()
    try:
        async with client.stream(
            p.get("method", "GET"), url, headers=p.get("headers"), timeout=httpx.Timeout(spec.timeout_seconds)
        ) as response:
            days_left = _cert_days_left(response) if url.startswith("https") else None
            body = await response.aread()
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return [CheckResult(spec.name, url, False, f"{url}: {reason}", details={**details, "error": reason})]
    latency = time.perf_counter() - started
    details.update(status=response.status_code, latency_seconds=round(latency, 4))

    expected = p.get("expect_status", [200])
    if response.status_code not in expected:
        problems.append(f"status {response.status_code}, expected {expected}")
    if p.get("json"):
        try:
            document = json.loads(body)
        except ValueError:
            problems.append("body is not JSON: " + body[:_BODY_EXCERPT].decode(errors="replace"))
        else:
            problems.extend(r for r in (predicate.evaluate(document, c) for c in p["json"]) if r)
    limit = p.get("max_latency_seconds")
    if limit is not None and latency > limit:
        problems.append(f"latency {latency:.3f}s above {limit}s")
    if days_left is not None:
        details["tls_days_left"] = round(days_left, 2)
        if "tls_min_days" in p and days_left < p["tls_min_days"]:
            problems.append(f"TLS certificate expires in {days_left:.1f} days (minimum {p['tls_min_days']})")
    summary = f"{url}: " + ("; ".join(problems) if problems else f"{response.status_code} in {latency:.3f}s")
    return [CheckResult(spec.name, url, not problems, summary, details=details)]
