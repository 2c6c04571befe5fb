"""Run a DAG's own tasks in-process, in the DAG's own order, with Airflow's trigger rules and retries.

Issue 18: the blue-green integration tests used to run a copy of the promotion DAG's steps; a change
to the DAG (a step added, moved or re-wired, a trigger rule, the teardown) never reached them. This
runner takes everything from the parsed DAG: the tasks (``dag.topological_sort()``), their inputs
(each ``@task``'s ``XComArg`` arguments, resolved to the upstream task's return value), their trigger
rules, the setup/teardown pairing, branching, sensors' ``PokeReturnValue`` and the task's
``retries``. Only Airflow's scheduler and the metadata DB are left out, so a scenario takes seconds
and a test can act between two tasks (``before=`` / ``after=``); ``tests/integration/promotion/
test_promotion_dag.py`` runs the same DAG under ``dag.test()`` beside it.

What it does not run: operators that need the scheduler or the triggerer (an approval, a
``TriggerDagRunOperator`` with work to do). Reaching one raises ``NotImplementedError``; use
``dag.test()`` or the e2e tier for those scenarios.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED = "success", "failed", "skipped", "upstream_failed"


@cache
def load_dag(dag_file: Path, dag_id: str):
    """The DAG as the DAG processor parses it (once per process)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_file), safe_mode=False)
    if dag_id not in bag.dags:
        raise LookupError(f"{dag_file} defines no DAG {dag_id!r}: {bag.import_errors or list(bag.dags)}")
    return bag.dags[dag_id]


class StepTI:
    """The task instance a task sees through ``get_current_context()['ti']``: XComs of this run only."""

    def __init__(self, run: StepRun, task_id: str, try_number: int):
        self._run = run
        self.task_id = task_id
        self.dag_id = run.dag.dag_id
        self.run_id = run.run_id
        self.try_number = try_number
        self.map_index = -1

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self._run.xcoms.get((task_ids or self.task_id, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self._run.xcoms[(self.task_id, key)] = value


@dataclass
class StepRun:
    """One run of ``dag``: each task's state, return value and (for a failure) exception."""

    dag: Any
    run_id: str
    params: dict[str, Any]
    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)

    def value(self, task_id: str) -> Any:
        return self.xcoms.get((task_id, "return_value"))

    @property
    def failed(self) -> bool:
        return any(state == FAILED for state in self.states.values())

    def first_error(self) -> BaseException | None:
        """The exception of the first task that failed (in the DAG's order), unwrapped from the
        ``AirflowFailException`` that marks a refusal as final (``mlops.promotion.tasks.final_verdicts``)."""
        from airflow.sdk.exceptions import AirflowFailException

        for task_id in self.states:
            error = self.errors.get(task_id)
            if error is not None:
                if isinstance(error, AirflowFailException) and error.__cause__ is not None:
                    return error.__cause__
                return error
        return None


def _resolve(value: Any, run: StepRun) -> Any:
    """An ``XComArg`` argument -> the upstream task's value (``.output['key']`` too)."""
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    if isinstance(value, PlainXComArg):
        return run.xcoms.get((value.operator.task_id, value.key))
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, run) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, run) for k, v in value.items()}
    return value


def _trigger_verdict(task: Any, run: StepRun) -> str | None:
    """None: run it. Otherwise the state Airflow gives a task whose trigger rule is not met, as
    ``airflow.ti_deps.deps.trigger_rule_dep.TriggerRuleDep`` decides it (Airflow 3.3), for the
    rules the project's DAGs use; another rule raises ``NotImplementedError``."""
    from airflow.task.trigger_rule import TriggerRule

    upstream = [run.states[t] for t in task.upstream_task_ids]
    rule = TriggerRule(task.trigger_rule)
    failed = any(s in (FAILED, UPSTREAM_FAILED) for s in upstream)
    if rule == TriggerRule.ALL_SUCCESS:
        if failed:
            return UPSTREAM_FAILED
        return SKIPPED if any(s == SKIPPED for s in upstream) else None
    if rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS:
        if failed:
            return UPSTREAM_FAILED
        return None if any(s == SUCCESS for s in upstream) or not upstream else SKIPPED
    if rule == TriggerRule.ALL_DONE_SETUP_SUCCESS:
        # A teardown runs once everything upstream is done if one of its setups succeeded; all setups
        # skipped: skipped; none succeeded: upstream_failed.
        setups = [run.states[t] for t in task.upstream_task_ids if run.dag.get_task(t).is_setup]
        if setups and all(s == SKIPPED for s in setups):
            return SKIPPED
        if setups and not any(s == SUCCESS for s in setups):
            return UPSTREAM_FAILED
        return None
    if rule == TriggerRule.ALL_DONE:
        return None
    raise NotImplementedError(f"{task.task_id}: trigger rule {rule} is not supported by this runner")


class StepRunner:
    """Runs ``dag``'s tasks for one conf; ``before``/``after`` callables run around a named task
    (to break something between two steps, as a person or another controller would)."""

    def __init__(
        self, dag: Any, *, poke_seconds: float = 0.2, sensor_timeout: float = 30, retry_delay: float = 0
    ):
        self.dag = dag
        self.poke_seconds = poke_seconds
        self.sensor_timeout = sensor_timeout
        self.retry_delay = retry_delay

    def params(self, conf: Mapping[str, Any]) -> dict[str, Any]:
        """The run's params: the DAG's defaults overlaid with ``conf``, validated as at trigger time."""
        import copy

        params = copy.deepcopy(self.dag.params)
        params.update(dict(conf))
        return params.validate()

    def run(
        self,
        conf: Mapping[str, Any],
        run_id: str,
        before: Mapping[str, Callable[[], None]] | None = None,
        after: Mapping[str, Callable[[], None]] | None = None,
    ) -> StepRun:
        run = StepRun(self.dag, run_id, self.params(conf))
        before, after = before or {}, after or {}
        for task in self.dag.topological_sort():
            if task.task_id in run.states:  # skipped by a branch that did not follow it
                continue
            verdict = _trigger_verdict(task, run)
            if verdict is not None:
                run.states[task.task_id] = verdict
                continue
            if task.task_id in before:
                before[task.task_id]()
            run.states[task.task_id] = self._execute(task, run)
            if task.task_id in after and run.states[task.task_id] == SUCCESS:
                after[task.task_id]()
        return run

    def _execute(self, task: Any, run: StepRun) -> str:
        """One task, with its retries (an ``AirflowFailException`` is final, as in Airflow)."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        attempts = 1 + int(task.retries or 0)
        for attempt in range(1, attempts + 1):
            run.tries[task.task_id] = attempt
            try:
                self._call(task, run, attempt)
                run.errors.pop(task.task_id, None)
                return SUCCESS
            except AirflowSkipException:
                return SKIPPED
            except AirflowFailException as exc:
                run.errors[task.task_id] = exc
                return FAILED
            except Exception as exc:  # Airflow retries any other failure
                run.errors[task.task_id] = exc
                if attempt < attempts:
                    time.sleep(self.retry_delay)
        return FAILED

    def _call(self, task: Any, run: StepRun, attempt: int) -> None:
        from airflow.sdk import PokeReturnValue
        from airflow.sdk.bases.branch import BranchMixIn
        from airflow.sdk.bases.decorator import determine_kwargs
        from airflow.sdk.bases.sensor import BaseSensorOperator
        from airflow.sdk.definitions.mappedoperator import MappedOperator
        from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
        from airflow.sdk.execution_time.context import set_current_context

        ti = StepTI(run, task.task_id, attempt)
        context = {
            "dag": self.dag,
            "dag_run": None,
            "run_id": run.run_id,
            "params": run.params,
            "task": task,
            "ti": ti,
            "task_instance": ti,
            "triggering_asset_events": {},
        }
        if isinstance(task, MappedOperator):
            # ``.partial(...).expand(conf=upstream)``: nothing to map is a skip, as in Airflow.
            expand = {k: _resolve(v, run) for k, v in task._get_specified_expand_input().value.items()}
            if all(not v for v in expand.values()):
                raise AirflowSkipException("mapped over an empty list")
            raise NotImplementedError(
                f"{task.task_id}: mapping {expand} needs the scheduler (use dag.test())"
            )
        if not hasattr(task, "python_callable"):
            if type(task).__name__ == "DeferredDelay":  # mlops.promotion.operators: a triggerer timer
                time.sleep(float(task.render_template(task.delay_seconds, context) or 0))
                return
            raise NotImplementedError(
                f"{task.task_id} ({type(task).__name__}) needs the scheduler or triggerer (use dag.test())"
            )
        args = _resolve(list(task.op_args or []), run)
        # As the decorated operator does: its op_kwargs merged into the context, then only what the
        # callable's signature takes (``**context`` takes everything).
        kwargs = determine_kwargs(
            task.python_callable, args, {**context, **_resolve(dict(task.op_kwargs or {}), run)}
        )
        deadline = time.monotonic() + self.sensor_timeout
        with set_current_context(context):
            while True:
                value = task.python_callable(*args, **kwargs)
                if not isinstance(task, BaseSensorOperator):
                    break
                done = value.is_done if isinstance(value, PokeReturnValue) else bool(value)
                if done:
                    value = value.xcom_value if isinstance(value, PokeReturnValue) else None
                    break
                if time.monotonic() > deadline:
                    raise AirflowSensorTimeout(f"{task.task_id}: not done after {self.sensor_timeout} s")
                time.sleep(self.poke_seconds)
        if isinstance(task, BranchMixIn):
            self._skip_unfollowed(task, run, value)
        run.xcoms[(task.task_id, "return_value")] = value

    def _skip_unfollowed(self, task: Any, run: StepRun, followed: Any) -> None:
        """A branch: its direct downstream tasks that it did not name are skipped (``SkipMixin``)."""
        names = {followed} if isinstance(followed, str) else set(followed or [])
        for task_id in task.downstream_task_ids:
            if task_id not in names:
                run.states[task_id] = SKIPPED
