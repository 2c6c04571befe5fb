"""The provider's unmodified KubernetesPodOperator, run in-process against kubesim."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.harness.kubesim import ScriptedContainer


@dataclass
class FakeTaskInstance:
    """The few task-instance attributes ``execute()`` reads (labels) and writes (XCom)."""

    dag_id: str = "train_model"
    task_id: str = "train"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value) -> None:
        self.xcoms[key] = value


@pytest.fixture
def run_pod(kubeconfig, ns):
    """Execute an unmodified KubernetesPodOperator running ``image``; returns the fake task instance.

    ``run_pod.pod_name`` is the created pod's name afterwards (also when the operator raised).
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    def run(image: str, **kwargs):
        train = KubernetesPodOperator(
            task_id="train",
            name="train",
            namespace=ns,
            image=image,
            config_file=kubeconfig,
            kubernetes_conn_id=None,
            startup_check_interval_seconds=1,
            get_logs=True,
            **kwargs,
        )
        ti = FakeTaskInstance()
        context = {"ti": ti, "run_id": "manual__2025-01-01", "dag": None}
        try:
            train.execute(context)
        finally:
            run.pod_name = ti.xcoms.get("pod_name")
        return ti

    return run


def test_operator_succeeds_and_logs_container_output(run_pod, sim, ns, capsys):
    sim.register_image(
        "trainer:1", ScriptedContainer(logs=["epoch 1 loss=0.9", "epoch 2 loss=0.4"], run_seconds=0.3)
    )
    ti = run_pod("trainer:1")
    # Airflow 3 routes task logging through structlog to stdout (not the logging module caplog sees).
    log = capsys.readouterr().out
    assert "[base] epoch 1 loss=0.9" in log and "[base] epoch 2 loss=0.4" in log
    assert ti.xcoms["pod_namespace"] == ns
    # The calls the facts sheet lists, in order; the pod is deleted at the end (on_finish_action).
    lookups = sim.requests_matching("GET", rf"/namespaces/{ns}/pods$")
    assert lookups and "already_checked!=True,!airflow-worker" in lookups[0].query["labelSelector"]
    assert sim.requests_matching("POST", rf"/namespaces/{ns}/pods$")[0].status == 201
    follow = sim.requests_matching("GET", rf"/pods/{run_pod.pod_name}/log$")[0]
    assert follow.query["follow"] == "True" and follow.query["timestamps"] == "True"
    assert sim.requests_matching("DELETE", rf"/pods/{run_pod.pod_name}$")[0].status == 200


def test_operator_raises_when_the_container_fails(run_pod, sim, ns):
    from airflow.exceptions import AirflowException

    sim.register_image("trainer:bad", ScriptedContainer(logs=["CUDA error"], exit_code=1, run_seconds=0.1))
    with pytest.raises(AirflowException, match=r"Pod train-\w+ returned a failure"):
        run_pod("trainer:bad", on_finish_action="keep_pod")
    pod = sim.get("Pod", ns, run_pod.pod_name)
    assert pod["metadata"]["labels"]["already_checked"] == "True"  # the operator's strategic-merge PATCH
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_operator_recovers_from_a_503_on_the_first_pod_read(run_pod, sim, ns):
    sim.register_image("trainer:1", ScriptedContainer(logs=["ok"], run_seconds=0.1))
    fault = sim.faults.add(method="GET", path=rf"/namespaces/{ns}/pods/[^/]+$", status=503, times=1)
    run_pod("trainer:1")
    assert fault.hits == 1
    reads = sim.requests_matching("GET", rf"/namespaces/{ns}/pods/{run_pod.pod_name}$")
    assert reads[0].status == 503 and reads[1].status == 200


def test_operator_fails_fast_on_an_image_that_cannot_be_pulled(run_pod):
    from airflow.exceptions import AirflowException

    with pytest.raises(AirflowException, match="returned a failure") as err:
        run_pod("registry.example.com/no-such-image:1")
    # The launch check gave up on the ImagePullBackOff at once; cleanup then reported the failed pod.
    assert "Image cannot be pulled" in str(err.value.__context__)
