"""Clearing training runs through the REST API, as an operator does after a failure (issue 13, bug 12).

With a DAGRUN_QUEUED_AT DeadlineAlert on the DAG, Airflow 3.3 answered both clears with HTTP 500
(``TypeError: unsupported type for timedelta seconds component: dict``, apache/airflow#70368).
Clearing a running task must also stop it: its pod is deleted, and the task runs again.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import E2E_NAMESPACE, wait_for_dag
from tests.e2e.flows import trigger, wait

pytestmark = pytest.mark.e2e
DAG_ID = "mlops_training"


def _trigger(api, conf: dict) -> str:
    return trigger(api, DAG_ID, conf)


def _ti(api, run_id: str, task_id: str = "train_model"):
    import airflow_client.client as ac

    return ac.TaskInstanceApi(api).get_task_instance(DAG_ID, run_id, task_id)


def _run_pods(kube, run_id: str) -> list[dict]:
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    label = make_safe_label_value(run_id)  # how the provider labels the run's pods
    return [
        p for p in kube.list("Pod", E2E_NAMESPACE) if p["metadata"].get("labels", {}).get("run_id") == label
    ]


def _running_pod(kube, run_id: str) -> dict | None:
    pods = [p for p in _run_pods(kube, run_id) if p.get("status", {}).get("phase") == "Running"]
    return pods[0] if pods else None


def test_clearing_a_running_training_task_deletes_its_pod_and_runs_it_again(api, kube, standalone):
    import airflow_client.client as ac

    wait_for_dag(api, DAG_ID)
    # Long enough to be cleared while it trains; the second try is stopped at the end of the test.
    run_id = _trigger(
        api,
        {"model_name": "digits-clear", "compute_profile": "cpu", "epochs": 1000, "batch_size": 8},
    )
    first = wait("the first pod to run", lambda: _running_pod(kube, run_id), 120)
    assert _ti(api, run_id).try_number == 1

    ac.TaskInstanceApi(api).post_clear_task_instances(
        DAG_ID,
        ac.ClearTaskInstancesBody(
            dag_run_id=run_id,
            task_ids=[ac.ClearTaskInstancesBodyTaskIdsInner("train_model")],
            dry_run=False,
            only_failed=False,
        ),
    )  # raised ApiException(500) before the fix

    first_name = first["metadata"]["name"]
    wait(
        "the cleared task's pod to be deleted",
        lambda: all(p["metadata"]["name"] != first_name for p in kube.list("Pod", E2E_NAMESPACE)),
        90,
    )
    assert kube.requests_matching("DELETE", rf"/namespaces/{E2E_NAMESPACE}/pods/{first_name}$")
    second = wait(
        "the task to run again in a new pod",
        lambda: (p := _running_pod(kube, run_id)) and p["metadata"]["name"] != first_name and p,
        120,
    )
    assert _ti(api, run_id).try_number == 2
    assert second["metadata"]["labels"]["try_number"] == "2"

    # Stop the second try: marking the run failed kills the task, which deletes its pod.
    ac.DagRunApi(api).patch_dag_run(DAG_ID, run_id, ac.DAGRunPatchBody(state="failed"))
    wait("the second pod to be deleted", lambda: not _run_pods(kube, run_id), 90)


def test_clearing_a_finished_training_run_runs_it_again(api, kube, standalone):
    import airflow_client.client as ac

    wait_for_dag(api, DAG_ID)
    run_id = _trigger(api, {"model_name": "digits-rerun", "compute_profile": "cpu", "epochs": 1})
    runs = ac.DagRunApi(api)
    wait("the run to succeed", lambda: runs.get_dag_run(DAG_ID, run_id).state == "success", 240, 1)

    runs.clear_dag_run(DAG_ID, run_id, ac.DAGRunClearBody(dry_run=False))  # 500 before the fix

    wait("the run to be queued again", lambda: runs.get_dag_run(DAG_ID, run_id).state != "success", 30)
    wait("the re-run to succeed", lambda: runs.get_dag_run(DAG_ID, run_id).state == "success", 240, 1)
    assert _ti(api, run_id).try_number == 2
    assert _ti(api, run_id, "register_candidate").try_number == 2
    assert not _run_pods(kube, run_id)  # no pod outlives its task
