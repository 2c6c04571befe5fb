"""The JSON body predicate language: key paths, operators, and no code execution."""

from __future__ import annotations

import pytest

from mlops.health.predicate import evaluate

DOC = {"status": "ok", "models": [{"name": "churn", "ready": True, "p95": 0.2}], "count": 3}


@pytest.mark.parametrize(
    ("predicate", "holds"),
    [
        ({"path": "status", "op": "eq", "value": "ok"}, True),
        ({"path": "models[0].ready", "op": "eq", "value": True}, True),
        ({"path": "models.0.name", "op": "in", "value": ["churn", "fraud"]}, True),
        ({"path": "models[0].p95", "op": "lt", "value": 0.5}, True),
        ({"path": "count", "op": "ge", "value": 4}, False),
        ({"path": "status", "op": "contains", "value": "o"}, True),
        ({"path": "models[3].name", "op": "exists"}, False),
        ({"path": "models", "op": "exists"}, True),
    ],
)
def test_predicates_follow_key_paths_and_operators(predicate, holds):
    assert (evaluate(DOC, predicate) is None) is holds


def test_a_missing_path_is_reported_by_name():
    assert (
        evaluate(DOC, {"path": "models[0].version", "op": "eq", "value": "3"}) == "models[0].version: missing"
    )


def test_comparing_incomparable_types_fails_instead_of_raising():
    assert evaluate(DOC, {"path": "status", "op": "gt", "value": 3}) is not None


def test_a_value_that_looks_like_code_is_only_ever_compared():
    reason = evaluate(DOC, {"path": "status", "op": "eq", "value": "__import__('os').system('false')"})
    assert reason == "status: 'ok' is not eq \"__import__('os').system('false')\""
