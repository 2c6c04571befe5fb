"""Fixtures for the health-check integration tests: real local endpoints and check specs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.health.endpoints import EndpointServer


@pytest.fixture(scope="module")
def endpoints() -> Iterator[EndpointServer]:
    server = EndpointServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(monkeypatch):
    """The project settings as a task would read them (after the test's env overrides)."""
    from mlops.settings import get_settings

    return get_settings()
