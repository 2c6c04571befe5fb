"""The DAG-step runner (tests/harness/dagsteps.py) against Airflow itself: the same small DAG, run by
``dag.test()`` and by the runner, ends in the same task states and values. It uses the features the
promotion DAG uses: XComArg inputs, a branch, a trigger rule that joins a branch, retries, a final
failure, a reschedule sensor, a setup/teardown pair and params validated at trigger time."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.harness.dagsteps import StepRunner, load_dag

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import Param, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowFailException

TRIES = {}


@dag(
    dag_id="DAG_ID",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={
        "n": Param(2, type="integer", minimum=0),
        "fail": Param("none", enum=["none", "final", "setup"]),
        "ready": Param(True, type="boolean"),
    },
    default_args={"retries": 1, "retry_delay": 0},
)
def steps():
    @task
    def start(**ctx) -> int:
        if ctx["params"]["fail"] == "setup":
            raise AirflowFailException("the setup refused")
        return ctx["params"]["n"]

    @task.sensor(poke_interval=0.1, timeout=30, mode="reschedule")
    def ready(n: int, **ctx):
        key = "ready-" + ctx["run_id"]
        TRIES[key] = TRIES.get(key, 0) + 1  # done at the third poke
        return PokeReturnValue(is_done=ctx["params"]["ready"] and TRIES[key] >= 3, xcom_value=n * 10)

    @task
    def flaky(value: int, **ctx) -> int:
        key = ctx["run_id"]
        TRIES[key] = TRIES.get(key, 0) + 1
        if TRIES[key] == 1:
            raise RuntimeError("transient: retried")
        if ctx["params"]["fail"] == "final":
            raise AirflowFailException("final: not retried")
        return value + 1

    @task.branch
    def choose(value: int) -> list[str]:
        return ["big"] if value > 25 else ["small"]

    @task
    def big() -> str:
        return "big"

    @task
    def small() -> str:
        return "small"

    @task(trigger_rule="none_failed_min_one_success")
    def join(**ctx) -> list:
        return [ctx["ti"].xcom_pull(task_ids="big"), ctx["ti"].xcom_pull(task_ids="small")]

    @task
    def release(**ctx) -> str:
        return "released after " + str(ctx["ti"].xcom_pull(task_ids="join"))

    setup = ready.override(task_id="ready")(start())
    value = flaky(setup)
    branch = choose(value)
    joined = join()
    branch >> [big(), small()] >> joined
    joined >> release().as_teardown(setups=setup)


steps()
"""


@pytest.fixture(scope="module")
def dag_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    dag_id = f"harness_steps_{uuid.uuid4().hex[:6]}"
    path = tmp_path_factory.mktemp("dags") / f"{dag_id}.py"
    path.write_text(textwrap.dedent(DAG_SOURCE).replace("DAG_ID", dag_id))
    return path, dag_id


def by_airflow(dag_file, conf: dict, monkeypatch) -> dict[str, str]:
    # dag.test() syncs the DAG's bundle to the metadata DB: the bundle is this test's DAG folder.
    bundle = {
        "name": "harness-steps",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(dag_file[0].parent), "refresh_interval": 0},
    }
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    run = load_dag(*dag_file).test(run_conf=conf)
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        (
            {"n": 3, "fail": "none"},  # 3 -> 30 -> 31: big
            {"start": "success", "ready": "success", "flaky": "success", "choose": "success",
             "big": "success", "small": "skipped", "join": "success", "release": "success"},
        ),
        (
            {"n": 1, "fail": "none"},  # 1 -> 10 -> 11: small
            {"start": "success", "ready": "success", "flaky": "success", "choose": "success",
             "big": "skipped", "small": "success", "join": "success", "release": "success"},
        ),
        (
            {"n": 1, "fail": "final"},  # flaky fails for good; the teardown still runs
            {"start": "success", "ready": "success", "flaky": "failed", "choose": "upstream_failed",
             "big": "upstream_failed", "small": "upstream_failed", "join": "upstream_failed",
             "release": "success"},
        ),
        (
            {"n": 1, "fail": "setup"},  # the setup failed: its teardown does not run
            {"start": "failed", "ready": "upstream_failed", "flaky": "upstream_failed",
             "choose": "upstream_failed", "big": "upstream_failed", "small": "upstream_failed",
             "join": "upstream_failed", "release": "upstream_failed"},
        ),
    ],
    ids=["branch-big", "branch-small", "final-failure", "setup-failed"],
)  # fmt: skip
def test_the_runner_ends_a_dag_in_the_states_airflow_gives_it(
    dag_file, airflow_db, conf, expected, monkeypatch
):
    runner = StepRunner(load_dag(*dag_file), poke_seconds=0.05)
    run = runner.run(conf, f"harness-{uuid.uuid4().hex[:6]}")
    airflow = by_airflow(dag_file, conf, monkeypatch)
    assert run.states == expected
    assert airflow == expected, airflow


def test_values_flow_through_xcom_args_and_a_retry_is_counted(dag_file):
    run = StepRunner(load_dag(*dag_file), poke_seconds=0.05).run({"n": 3}, "values")
    assert run.value("ready") == 30 and run.value("flaky") == 31 and run.value("join") == ["big", None]
    assert run.tries["flaky"] == 2 and "flaky" not in run.errors
    assert run.value("release") == "released after ['big', None]"


def test_a_final_failure_is_reported_unwrapped_and_not_retried(dag_file):
    run = StepRunner(load_dag(*dag_file), poke_seconds=0.05).run({"n": 1, "fail": "final"}, "final")
    assert run.failed and run.tries["flaky"] == 2  # the transient first try, then the final refusal
    error = run.first_error()
    assert "final: not retried" in str(error)


def test_invalid_params_are_refused_before_any_task_runs(dag_file):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="n"):
        StepRunner(load_dag(*dag_file)).run({"n": -1}, "invalid")


def test_hooks_run_around_the_named_task_only_when_it_runs(dag_file):
    seen: list[str] = []
    StepRunner(load_dag(*dag_file), poke_seconds=0.05).run(
        {"n": 1},
        "hooks",
        before={"small": lambda: seen.append("before small"), "big": lambda: seen.append("before big")},
        after={"small": lambda: seen.append("after small")},
    )
    assert seen == ["before small", "after small"]


def test_a_sensor_that_never_finishes_fails_after_its_timeout_and_nothing_after_it_runs(dag_file):
    run = StepRunner(load_dag(*dag_file), poke_seconds=0.01, sensor_timeout=0.3).run(
        {"n": 1, "ready": False}, "sensor"
    )
    assert run.states["ready"] == "failed" and "not done after 0.3 s" in str(run.errors["ready"])
    assert run.states["flaky"] == "upstream_failed" and run.states["release"] == "upstream_failed"
