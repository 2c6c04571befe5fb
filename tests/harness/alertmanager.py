"""A real Alertmanager (Debian's ``prometheus-alertmanager`` 0.25) on loopback.

Its receivers are the harness's Slack and PagerDuty receivers: ``slack_configs`` post
to the Slack receiver (``api_url``), ``pagerduty_configs`` to the HTTPS PagerDuty
receiver (``url``, verified with the receiver's CA through ``http_config.tls_config``).
Timers are shortened so that a test sees a group notified within seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlops.dev.ports import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MISSING = "prometheus-alertmanager not installed: apt-get install prometheus-alertmanager"


def alertmanager_config(slack_url: str, pagerduty_url: str, pagerduty_ca: str) -> dict[str, Any]:
    """Route critical/error alerts to PagerDuty and Slack, the rest to Slack; group by ``group``."""
    slack = {"api_url": f"{slack_url}/services/alertmanager", "channel": "#mlops", "send_resolved": True}
    pagerduty = {
        "routing_key": "dev-routing-key-0000000000000000",
        "url": f"{pagerduty_url}/v2/enqueue",
        "send_resolved": True,
        "http_config": {"tls_config": {"ca_file": pagerduty_ca}},
    }
    return {
        "route": {
            "receiver": "slack",
            "group_by": ["group"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [{"matchers": ['severity=~"critical|error"'], "receiver": "page"}],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="model-server-health"'],
                "target_matchers": ['alertname="serving-pods"'],
                "equal": ["group"],
            }
        ],
        "receivers": [
            {"name": "slack", "slack_configs": [slack]},
            {"name": "page", "slack_configs": [slack], "pagerduty_configs": [pagerduty]},
        ],
    }


@contextlib.contextmanager
def running_alertmanager(home: Path, config: dict[str, Any]) -> Iterator[str]:
    """Run Alertmanager with ``config``; yields its base URL, stops it after."""
    assert ALERTMANAGER, MISSING
    home.mkdir(parents=True, exist_ok=True)
    (home / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={home / 'alertmanager.yml'}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a single instance
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(home / 'alertmanager.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("alertmanager not ready after 20 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
