"""The installed environment matches the pins exactly (requirements.txt + requirements-dev.txt)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)")
# Installer tooling and the project itself are not runtime pins.
_UNPINNED_OK = {"pip", "setuptools", "wheel", "mlops-airflow"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(*files: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for file in files:
        for line in (REPO_ROOT / file).read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "-")):
                continue
            match = _PIN.match(line)
            assert match, f"{file}: not an exact pin: {line!r}"
            pins[_canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    return {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_requirements_txt_pins_airflow_and_the_providers_exactly():
    pins = read_pins("requirements.txt")
    for name, version in {
        "apache-airflow": "3.3.2",
        "apache-airflow-providers-cncf-kubernetes": "10.25.0",
        "apache-airflow-providers-amazon": "9.39.0",
        "apache-airflow-providers-slack": "9.11.1",
        "apache-airflow-providers-pagerduty": "5.3.1",
        "apache-airflow-providers-postgres": "7.1.1",
        "apache-airflow-providers-standard": "1.21.0",
    }.items():
        assert pins.get(name) == version, f"{name} must be pinned to {version}"
    for name in ("boto3", "kubernetes", "slack-sdk"):
        assert name in pins, f"{name} must be pinned in requirements.txt"


def test_runtime_and_dev_pins_do_not_overlap():
    runtime, dev = read_pins("requirements.txt"), read_pins("requirements-dev.txt")
    assert not set(runtime) & set(dev), "a package is pinned in both files"


def test_installed_environment_matches_the_pins_exactly():
    pins = read_pins("requirements.txt", "requirements-dev.txt")
    have = installed()
    wrong = {n: (v, have.get(n)) for n, v in pins.items() if have.get(n) != v}
    unpinned = sorted(set(have) - set(pins) - _UNPINNED_OK)
    assert not wrong, (
        f"installed versions drift from the pins (pin, installed): {wrong}; run `make test` to resync"
    )
    assert not unpinned, f"installed but not pinned (add to a pin file or uninstall): {unpinned}"
