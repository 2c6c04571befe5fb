"""`make run`'s choice of Kubernetes cluster."""

from __future__ import annotations


def test_the_default_mode_never_simulates_and_says_how_to_get_a_cluster(tmp_path):
    from mlops.dev.run import configure_kubernetes

    values, sim, messages = configure_kubernetes("auto", tmp_path, kubeconfig=str(tmp_path / "no-kubeconfig"))
    assert values == {} and sim is None
    assert "kind" in messages[0] and "CLUSTER=simulated" in messages[0]
