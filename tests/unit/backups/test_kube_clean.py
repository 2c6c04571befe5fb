"""What a clean Kubernetes export keeps and strips (pure functions)."""

from __future__ import annotations

from mlops.backups.kube_export import clean_object, is_cluster_made

SERVER_META = {
    "uid": "6c1e", "resourceVersion": "4711", "generation": 3, "creationTimestamp": "2026-03-01T03:00:00Z",
    "managedFields": [{"manager": "kubectl"}], "selfLink": "/apis/apps/v1/x",
}  # fmt: skip


def test_deployment_loses_server_fields_and_keeps_intent():
    live = {
        "metadata": {"name": "blue", "namespace": "ml-serving", "labels": {"app": "m"}, **SERVER_META,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                                     "deployment.kubernetes.io/revision": "7", "team": "ml"}},
        "spec": {"replicas": 2, "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "m"}},
                                             "spec": {"containers": [{"name": "s", "image": "i:1"}]}}},
        "status": {"readyReplicas": 2},
    }  # fmt: skip

    clean = clean_object("Deployment", "apps/v1", live)

    assert clean == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "blue", "namespace": "ml-serving", "labels": {"app": "m"},
                     "annotations": {"team": "ml"}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "m"}},
                                             "spec": {"containers": [{"name": "s", "image": "i:1"}]}}},
    }  # fmt: skip
    assert live["status"] == {"readyReplicas": 2}  # the input is not modified


def test_service_loses_its_allocated_cluster_ip_but_keeps_ports():
    live = {"metadata": {"name": "svc", **SERVER_META},
            "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ipFamilies": ["IPv4"],
                     "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}],
                     "selector": {"app": "m"}}}  # fmt: skip

    assert clean_object("Service", "v1", live)["spec"] == {"ports": [{"port": 80}], "selector": {"app": "m"}}


def test_service_account_loses_generated_token_secrets():
    live = {"metadata": {"name": "trainer"}, "secrets": [{"name": "trainer-token-x"}]}
    assert clean_object("ServiceAccount", "v1", live) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "trainer"},
    }


def test_objects_made_by_the_cluster_are_recognised():
    owned = {"metadata": {"name": "x", "ownerReferences": [{"kind": "Deployment", "controller": True}]}}
    referenced = {"metadata": {"name": "y", "ownerReferences": [{"kind": "Deployment"}]}}
    assert is_cluster_made("ConfigMap", owned)
    assert not is_cluster_made("ConfigMap", referenced)
    assert is_cluster_made("ServiceAccount", {"metadata": {"name": "default"}})
    assert is_cluster_made("ConfigMap", {"metadata": {"name": "kube-root-ca.crt"}})
    assert not is_cluster_made("ConfigMap", {"metadata": {"name": "serving-config"}})
