"""Compute profiles as the scheduler sees them: the exact resources a pod reserves (disk included), the
node affinity that keeps a run on the GPU class it asked for, and the refusal of an unknown profile."""

from __future__ import annotations

import re

import pytest
from kubernetes.client import ApiClient

from mlops.training.profiles import PROFILES, ComputeProfile, get_profile

GPU = "nvidia.com/gpu"


def _json(obj) -> dict | None:
    return ApiClient().sanitize_for_serialization(obj)


@pytest.mark.parametrize(
    ("profile", "gpus", "amounts"),
    [
        ("cpu", None, {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "20Gi"}),
        ("gpu-small", 2, {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "20Gi", GPU: "2"}),
        ("gpu-large", 8, {"cpu": "32", "memory": "240Gi", "ephemeral-storage": "200Gi", GPU: "8"}),
        ("gpu-spot", None, {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "20Gi", GPU: "1"}),
    ],
)
def test_the_pod_reserves_exactly_the_profiles_resources_disk_included(profile, gpus, amounts):
    resources = _json(PROFILES[profile].resources(gpus))
    assert resources == {"requests": amounts, "limits": amounts}


def _required_gpu_class(classes: list[str]) -> dict:
    term = {"matchExpressions": [{"key": "mlops.io/gpu-class", "operator": "In", "values": classes}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


@pytest.mark.parametrize(
    ("profile", "classes"),
    [("gpu-small", ["small", "large"]), ("gpu-large", ["large"]), ("gpu-spot", ["small", "large"])],
)
def test_a_gpu_profile_only_schedules_onto_its_gpu_classes(profile, classes):
    assert _json(PROFILES[profile].k8s_affinity()) == _required_gpu_class(classes)


def test_the_cpu_profile_sets_no_node_affinity():
    assert PROFILES["cpu"].k8s_affinity() is None


def test_every_required_node_label_becomes_one_expression_in_name_order():
    profile = ComputeProfile(
        name="probe",
        cpu="1",
        memory="1Gi",
        default_gpus=0,
        min_gpus=0,
        max_gpus=0,
        required_node_labels={"zone": ("a", "b"), "arch": ("amd64",)},
    )
    terms = _json(profile.k8s_affinity())["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "arch", "operator": "In", "values": ["amd64"]},
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
            ]
        }
    ]


def test_an_unknown_profile_is_refused_listing_the_valid_names():
    message = (
        "compute_profile: unknown profile 'gpu-huge'; "
        "choose one of ['cpu', 'gpu-small', 'gpu-large', 'gpu-spot']"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        get_profile("gpu-huge")
    assert get_profile("gpu-spot") is PROFILES["gpu-spot"]
