"""How the blue-green state machine reads the cluster: the whole rollout verdict, colors, versions, counts."""

from __future__ import annotations

import pytest

from mlops.promotion import bluegreen
from tests.unit.promotion.test_promotion_rules import deployment


@pytest.mark.parametrize(
    ("kwargs", "verdict"),
    [
        ({}, ("complete", "2/2 replicas updated, ready and available")),
        (
            {"desired": 3, "updated": 1, "ready": 1, "available": 1, "total": 1},
            ("progressing", "desired 3, updated 1, ready 1, available 1, total 1"),
        ),
        (
            {"desired": 0, "updated": 0, "ready": 0, "available": 0, "total": 0},
            ("progressing", "desired 0 replicas: a color at zero replicas serves nothing"),
        ),
        (
            {"generation": 3, "observed": 2},
            ("progressing", "status is stale: observedGeneration 2 < generation 3"),
        ),
        ({"generation": 3, "observed": 4}, ("complete", "2/2 replicas updated, ready and available")),
    ],
)
def test_the_whole_rollout_verdict(kwargs, verdict):
    assert bluegreen.rollout_status(deployment(**kwargs)) == verdict


def test_a_deadline_verdict_names_the_deadline_and_the_controllers_message():
    condition = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "timed out"}
    assert bluegreen.rollout_status(deployment(ready=0, conditions=[condition])) == (
        "failed",
        "progress deadline (60 s) exceeded: timed out",
    )
    other = {"type": "Available", "reason": "ProgressDeadlineExceeded", "message": "x"}
    assert bluegreen.rollout_status(deployment(conditions=[other]))[0] == "complete"
    without = deployment(ready=0, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    del without["spec"]["progressDeadlineSeconds"]
    assert bluegreen.rollout_status(without) == ("failed", "progress deadline (600 s) exceeded: ")


def test_a_status_the_controller_has_not_written_yet_is_progressing():
    fresh = {"metadata": {"generation": 1}, "spec": {"replicas": 1}}
    assert bluegreen.rollout_status(fresh) == (
        "progressing",
        "status is stale: observedGeneration 0 < generation 1",
    )
    unset = {"metadata": {}, "spec": {}, "status": {"observedGeneration": 1, "readyReplicas": None}}
    assert bluegreen.rollout_status(unset) == (
        "progressing",
        "desired 1, updated 0, ready 0, available 0, total 0",
    )
    one = {
        "metadata": {},
        "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1},
    }
    assert bluegreen.rollout_status(one) == ("complete", "1/1 replicas updated, ready and available")


def test_the_selected_color_must_be_a_known_color():
    assert bluegreen.service_color({"spec": {"selector": {"color": "blue"}}}) == "blue"
    assert bluegreen.service_color({"spec": {"selector": {}}}) is None
    assert bluegreen.service_color({"spec": {}}) is None
    assert bluegreen.service_color({"spec": {"selector": {"color": "purple"}}}) is None


def test_the_version_is_the_pod_templates_version_label():
    labelled = {"spec": {"template": {"metadata": {"labels": {"version": "v3", "color": "blue"}}}}}
    assert bluegreen.template_version(labelled) == "v3"
    assert bluegreen.template_version({"spec": {"template": {"metadata": {"labels": {}}}}}) is None
    assert bluegreen.template_version({"spec": {"template": {}}}) is None
    assert bluegreen.template_version(None) is None


def test_replicas_of_a_missing_deployment_or_an_unset_count_is_zero():
    assert bluegreen.replicas_of({"spec": {"replicas": 4}}) == 4
    assert bluegreen.replicas_of({"spec": {"replicas": None}}) == 0
    assert bluegreen.replicas_of({"spec": {}}) == 0
    assert bluegreen.replicas_of(None) == 0


@pytest.mark.parametrize(
    ("annotations", "count"),
    [
        ({}, 1),
        ({bluegreen.SCALED_DOWN_FROM: "3"}, 3),
        ({bluegreen.DESIRED_REPLICAS: "5"}, 5),
        ({bluegreen.SCALED_DOWN_FROM: "4", bluegreen.DESIRED_REPLICAS: "2"}, 4),
        ({bluegreen.SCALED_DOWN_FROM: "x", bluegreen.DESIRED_REPLICAS: "2"}, 2),
        ({bluegreen.SCALED_DOWN_FROM: "0"}, 1),
    ],
)
def test_a_color_comes_back_at_the_count_it_had_and_at_least_one(annotations, count):
    assert bluegreen.restore_count({"metadata": {"annotations": annotations}}) == count


def test_a_live_object_with_api_defaults_still_matches_what_we_rendered():
    desired = {
        "metadata": {"annotations": {"a": "1"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "s", "image": "i:1"}]}}},
    }
    live = {
        "metadata": {"annotations": {"a": "1", "deployment.kubernetes.io/revision": "3"}},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,
            "template": {
                "spec": {"containers": [{"name": "s", "image": "i:1", "imagePullPolicy": "IfNotPresent"}]}
            },
        },
    }
    assert bluegreen._same_spec(live, desired)
    changed_image = {
        **live,
        "spec": {**live["spec"], "template": {"spec": {"containers": [{"name": "s", "image": "i:2"}]}}},
    }
    assert not bluegreen._same_spec(changed_image, desired)
    assert not bluegreen._same_spec({**live, "metadata": {"annotations": {"a": "2"}}}, desired)
    assert not bluegreen._same_spec({"metadata": {}}, desired)
    two_containers = {"name": "t", "image": "j"}
    longer = {
        **live,
        "spec": {
            **live["spec"],
            "template": {"spec": {"containers": [{"name": "s", "image": "i:1"}, two_containers]}},
        },
    }
    assert not bluegreen._same_spec(longer, desired)
    assert not bluegreen._contains({"x": 1}, [1]) and not bluegreen._contains([1], {"x": 1})
    assert bluegreen._contains([{"a": 1, "b": 2}], [{"a": 1}]) and not bluegreen._contains(
        [{"a": 2}], [{"a": 1}]
    )
