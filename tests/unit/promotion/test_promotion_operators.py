"""The approval's retry rule: a retry by Airflow keeps the stored answer, a clear by a person asks again."""

from __future__ import annotations

import pytest

from mlops.promotion.operators import is_automatic_retry


@pytest.mark.parametrize(
    ("try_number", "max_tries", "retries", "expected"),
    [
        (1, 2, 2, False),  # the first try asks
        (2, 2, 2, True),  # Airflow retried it (a resume killed by the scheduler): keep the answer
        (3, 2, 2, True),
        (2, 3, 2, False),  # cleared after try 1: max_tries = 1 + retries, so try 2 asks again
        (3, 3, 2, True),  # ... and its own retry keeps that new answer
        (1, 0, 0, False),
    ],
)
def test_only_an_automatic_retry_reuses_the_answer(try_number, max_tries, retries, expected):
    assert is_automatic_retry(try_number, max_tries, retries) is expected
