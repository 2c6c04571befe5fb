"""Policy every DAG in dags/ must meet (STYLE.md, "Tests read like specifications")."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops import tags
from mlops.callbacks import TaskFailureAlert

EXPECTED_DAGS = {"mlops_training", "mlops_promotion", "mlops_rollback", "mlops_backups", "mlops_health"}
# Runs of these capabilities must never overlap: they mutate shared state (backups, alert state).
# Promotion runs do overlap (one model must not wait for another); the model's lease serializes them.
SERIAL_CAPABILITIES = {tags.BACKUP, tags.HEALTH}
# Tasks that never touch the network (watchers that only re-raise, approvals) may run without retries.
NO_NETWORK_TASK_PREFIXES = ("watcher", "fail_run_if", "approve_", "validate_", "plan_")


def _dags(parsed):
    return sorted(parsed.dagbag.dags.values(), key=lambda d: d.dag_id)


def test_dag_files_import_without_errors(parsed):
    assert parsed.dagbag.import_errors == {}


def test_every_expected_dag_is_present(parsed):
    assert EXPECTED_DAGS <= set(parsed.dagbag.dag_ids)


def test_no_connection_or_variable_is_looked_up_while_parsing(parsed):
    assert parsed.lookups == []


def test_each_file_holds_one_dag_named_after_the_file(parsed):
    for dag in _dags(parsed):
        assert Path(dag.fileloc).stem == dag.dag_id


def test_every_dag_has_an_owner_other_than_the_default(parsed):
    for dag in _dags(parsed):
        owners = {t.owner for t in dag.tasks}
        assert owners and "airflow" not in owners, f"{dag.dag_id}: owners {owners}"


def test_tags_come_from_the_vocabulary_with_one_capability(parsed):
    for dag in _dags(parsed):
        assert set(dag.tags) <= tags.VOCABULARY, (
            f"{dag.dag_id}: unknown tags {set(dag.tags) - tags.VOCABULARY}"
        )
        assert len(set(dag.tags) & tags.CAPABILITIES) == 1, f"{dag.dag_id}: needs exactly one capability tag"


def test_every_dag_documents_itself_with_a_triage_section(parsed):
    for dag in _dags(parsed):
        assert dag.doc_md and "Triage" in dag.doc_md, f"{dag.dag_id}: doc_md with a Triage section"


def test_network_tasks_have_retries(parsed):
    for dag in _dags(parsed):
        for task in dag.tasks:
            if task.task_id.startswith(NO_NETWORK_TASK_PREFIXES):
                continue
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} touches the network but has no retries"


def test_every_task_alerts_on_failure(parsed):
    for dag in _dags(parsed):
        for task in dag.tasks:
            callbacks = task.on_failure_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, TaskFailureAlert) for c in callbacks), f"{dag.dag_id}.{task.task_id}"


def test_every_task_resolves_its_failure_incident_when_it_succeeds_again(parsed):
    from mlops.callbacks import TaskRecoveryResolve

    for dag in _dags(parsed):
        for task in dag.tasks:
            callbacks = task.on_success_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, TaskRecoveryResolve) for c in callbacks), f"{dag.dag_id}.{task.task_id}"


@pytest.mark.parametrize("capability", sorted(SERIAL_CAPABILITIES))
def test_runs_that_mutate_shared_state_never_overlap(parsed, capability):
    dags = [d for d in _dags(parsed) if capability in d.tags]
    assert dags, f"no DAG tagged {capability}"
    for dag in dags:
        assert dag.max_active_runs == 1, f"{dag.dag_id}: max_active_runs must be 1"


def test_promotion_dags_change_serving_only_between_taking_and_releasing_the_lease(parsed):
    """Per-model serialization: every step after the lease is inside its setup/teardown scope,
    so the lease is released however the run ends (success, failure, Reject, timeout)."""
    dags = [d for d in _dags(parsed) if tags.PROMOTION in d.tags]
    assert {d.dag_id for d in dags} == {"mlops_promotion", "mlops_rollback"}
    for dag in dags:
        setups = [t for t in dag.tasks if t.is_setup]
        teardowns = [t for t in dag.tasks if t.is_teardown]
        assert [t.task_id for t in setups] == ["take_lease"], dag.dag_id
        assert len(teardowns) == 1 and "take_lease" in teardowns[0].upstream_task_ids, dag.dag_id
        teardown = teardowns[0]
        assert teardown.on_failure_fail_dagrun, f"{dag.dag_id}: a failed clean-up must fail the run"
        after_teardown = teardown.get_flat_relative_ids(upstream=False)
        for task_id in setups[0].get_flat_relative_ids(upstream=False) - after_teardown - {teardown.task_id}:
            task = dag.get_task(task_id)
            assert teardown.task_id in task.get_flat_relative_ids(upstream=False), f"{dag.dag_id}.{task_id}"
