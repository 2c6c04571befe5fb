"""The serving manifests: what the templates render, and that Kubernetes 1.30 accepts every one."""

from __future__ import annotations

import itertools

import kubernetes_validate
import pytest

from mlops.promotion.manifests.render import ServingSpec, deployment, hpa, pdb, render_all, service


def spec(color: str = "green", **kw) -> ServingSpec:
    values = dict(
        model="digits",
        color=color,
        version="20261127T101500-abc",
        image="ghcr.io/o/model-server:0.1.0",
        model_uri="s3://mlops-artifacts/models/digits/versions/20261127T101500-abc/",
        namespace="ml-serving",
    )
    values.update(kw)
    return ServingSpec(**values)


VARIANTS = [
    {},
    {
        "env": {"AWS_ENDPOINT_URL": "http://minio:9000"},
        "s3_secret": "s3-credentials",
        "service_account": "model-server",
        "annotations": {"mlops.io/promotion-run": "manual__2026"},
    },
]


@pytest.mark.parametrize(("color", "extra"), list(itertools.product(["blue", "green"], VARIANTS)))
def test_every_rendered_manifest_validates_against_kubernetes_1_30_strict(color, extra):
    docs = render_all(spec(color, **extra), active_color="blue")
    assert [d["kind"] for d in docs] == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_strict_validation_would_reject_a_misspelled_field():
    doc = deployment(spec())
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_deployment_is_labelled_probed_limited_and_restricted():
    doc = deployment(spec())
    labels = {"app": "model-server", "model": "digits", "color": "green", "version": "20261127T101500-abc"}
    assert labels.items() <= doc["metadata"]["labels"].items()
    assert labels.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    assert doc["spec"]["selector"]["matchLabels"] == {
        "app": "model-server",
        "model": "digits",
        "color": "green",
    }
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_VERSION"] == "20261127T101500-abc" and env["PORT"] == "8080"
    assert env["MODEL_URI"].startswith("s3://mlops-artifacts/models/digits/versions/")
    assert doc["spec"]["progressDeadlineSeconds"] == 600


def test_hpa_scales_on_cpu_70_and_memory_80_percent_and_pdb_selects_the_same_pods():
    h = hpa(spec())
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "digits-green",
    }
    targets = {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in h["spec"]["metrics"]
    }
    assert targets == {"cpu": 70, "memory": 80}
    assert (
        pdb(spec())["spec"]["selector"]["matchLabels"]
        == deployment(spec())["spec"]["selector"]["matchLabels"]
    )


def test_active_and_preview_services_select_a_color_by_label():
    active = service("digits", "ml-serving", "active", "blue")
    preview = service("digits", "ml-serving", "preview", "green")
    assert active["metadata"]["name"] == "digits" and preview["metadata"]["name"] == "digits-preview"
    assert active["spec"]["selector"] == {"app": "model-server", "model": "digits", "color": "blue"}
    assert preview["spec"]["selector"]["color"] == "green"
    assert active["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", "v1\nkind: Secret", "label value"),
        ("model", "Digits_Model", "DNS label"),
        ("color", "red", "color must be one of"),
        ("replicas", 9, "replicas must be between"),
    ],
)
def test_specs_that_would_render_invalid_manifests_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        spec(**{field: value})


def test_values_are_data_and_cannot_change_the_documents_shape():
    doc = deployment(spec(image='img:1"\n  hostNetwork: true', annotations={"a": "b: {c}"}))
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == 'img:1"\n  hostNetwork: true'
    assert "hostNetwork" not in doc["spec"]["template"]["spec"]
    assert doc["metadata"]["annotations"] == {"a": "b: {c}"}


def test_s3_credentials_come_from_a_secret_never_from_the_manifest():
    container = deployment(spec(s3_secret="s3-credentials"))["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "s3-credentials", "key": "aws_access_key_id"},
        "AWS_SECRET_ACCESS_KEY": {"name": "s3-credentials", "key": "aws_secret_access_key"},
    }


def test_the_registered_artifact_digest_is_the_pods_model_sha256():
    digest = "a" * 64
    env = deployment(spec(model_sha256=digest))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODEL_SHA256", "value": digest} in env
    unpinned = deployment(spec())["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MODEL_SHA256" not in {e["name"] for e in unpinned}
