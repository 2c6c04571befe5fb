"""Fixtures for the kubesim tests: one simulated cluster per session, a fresh namespace per test."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client, config

from tests.harness.kubesim import KubeSim


@pytest.fixture(scope="session")
def sim() -> Iterator[KubeSim]:
    cluster = KubeSim().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(sim: KubeSim, tmp_path_factory: pytest.TempPathFactory) -> str:
    return sim.write_kubeconfig(tmp_path_factory.mktemp("kubesim") / "kubeconfig")


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def ns(sim: KubeSim) -> Iterator[str]:
    """A fresh namespace; faults and paused controllers never leak into the next test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    sim.create_namespace(name)
    yield name
    sim.faults.clear()
    sim.resume_controllers()
    sim.delete("Namespace", None, name)


@pytest.fixture
def eventually() -> Callable[..., None]:
    """Poll ``predicate`` until it is truthy (fails the test after ``timeout`` seconds)."""

    def wait(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(interval)

    return wait


@pytest.fixture
def kubectl(kubeconfig: str, ns: str) -> Callable[..., subprocess.CompletedProcess]:
    """Run real kubectl against the sim in the test's namespace; ``check=False`` to inspect failures."""

    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 30):
        cmd = ["kubectl", "--kubeconfig", kubeconfig, "-n", ns, *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr}{result.stdout}"
            )
        return result

    return run


@pytest.fixture
def pod_manifest() -> Callable[..., dict]:
    """Build a one-container pod (container ``base``); extra keyword arguments go into the container."""

    def build(name: str, image: str = "job:1", restart_policy: str = "Never", **container) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "restartPolicy": restart_policy,
                "containers": [{"name": "base", "image": image, **container}],
            },
        }

    return build
