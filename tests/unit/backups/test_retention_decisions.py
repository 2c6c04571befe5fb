"""Retention decisions an operator relies on: windows at ISO-week and month boundaries, the newest
verified backup, the order of the plan and the refusal of bad policies (pure functions, no servers)."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from mlops.backups.retention import RetentionPolicy, select_retention


def days(first: date, last: date) -> list[date]:
    """Every date from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# Two weeks around New Year 2026: ISO week 2026-W01 starts on Monday 2025-12-29, so Dec 29-31
# belong to the same week as Jan 1-4 while they belong to December's month.
NEW_YEAR = days(date(2025, 12, 22), date(2026, 1, 4))


# -- refusals of bad settings ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("counts", "shown"),
    [
        ({"daily": -1}, "RetentionPolicy(daily=-1, weekly=4, monthly=6)"),
        ({"weekly": -1}, "RetentionPolicy(daily=7, weekly=-1, monthly=6)"),
        ({"monthly": -2}, "RetentionPolicy(daily=7, weekly=4, monthly=-2)"),
    ],
)
def test_a_negative_count_in_any_window_is_refused_and_the_message_shows_the_policy(counts, shown):
    with pytest.raises(ValueError, match=f"^{re.escape(f'retention counts must be >= 0, got {shown}')}$"):
        RetentionPolicy(**counts)


def test_a_policy_that_keeps_nothing_is_refused_with_a_message_saying_so():
    with pytest.raises(ValueError, match="^a retention policy that keeps nothing is refused$"):
        RetentionPolicy(daily=0, weekly=0, monthly=0)


@pytest.mark.parametrize(
    ("daily", "weekly", "monthly"),
    [(0, 3, 3), (2, 2, 0), (3, 0, 3), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 12)],
)
def test_a_policy_keeping_any_window_is_accepted_and_keeps_that_many(daily, weekly, monthly):
    policy = RetentionPolicy(daily=daily, weekly=weekly, monthly=monthly)
    history = days(date(2025, 1, 1), date(2026, 3, 1))

    plan = select_retention(history, policy)

    for rule, count in (("daily", daily), ("weekly", weekly), ("monthly", monthly)):
        assert sum(rule in why for why in plan.keep.values()) == count


# -- windows at ISO-week and month boundaries -----------------------------------------------------
def test_the_weekly_window_uses_iso_weeks_so_week_one_can_start_in_december():
    plan = select_retention(NEW_YEAR, RetentionPolicy(daily=0, weekly=2, monthly=0))

    # 2026-W01 = Dec 29 .. Jan 4 (its newest: Jan 4); 2025-W52 = Dec 22 .. Dec 28 (its newest: Dec 28).
    # Dec 31 is not a week of its own although the calendar year changes after it.
    assert plan.keep == {date(2026, 1, 4): ["weekly"], date(2025, 12, 28): ["weekly"]}
    assert date(2025, 12, 31) in plan.delete


def test_the_monthly_window_splits_at_the_calendar_month_not_at_the_iso_week():
    plan = select_retention(NEW_YEAR, RetentionPolicy(daily=0, weekly=0, monthly=2))

    assert plan.keep == {date(2026, 1, 4): ["monthly"], date(2025, 12, 31): ["monthly"]}


def test_a_year_with_53_iso_weeks_keeps_week_53_as_one_week_across_new_year():
    # 2020-W53 runs from Monday 2020-12-28 to Sunday 2021-01-03; 2021-W01 starts on 2021-01-04.
    history = [date(2020, 12, 27), date(2020, 12, 28), date(2021, 1, 1), date(2021, 1, 3), date(2021, 1, 4)]

    plan = select_retention(history, RetentionPolicy(daily=0, weekly=3, monthly=0))

    assert sorted(plan.keep) == [date(2020, 12, 27), date(2021, 1, 3), date(2021, 1, 4)]
    assert plan.delete == [date(2021, 1, 1), date(2020, 12, 28)]


def test_weeks_and_months_without_a_backup_do_not_use_up_the_windows():
    # Backups only in January and April: the two monthly slots go to April and January.
    history = [date(2026, 1, 10), date(2026, 1, 20), date(2026, 4, 2), date(2026, 4, 3)]

    plan = select_retention(history, RetentionPolicy(daily=0, weekly=0, monthly=2))

    assert plan.keep == {date(2026, 4, 3): ["monthly"], date(2026, 1, 20): ["monthly"]}


def test_two_listings_of_the_same_date_count_as_one_backup_date():
    history = [date(2026, 3, 1), date(2026, 3, 1), date(2026, 2, 28), date(2026, 2, 27)]

    plan = select_retention(history, RetentionPolicy(daily=2, weekly=0, monthly=0))

    assert plan.keep == {date(2026, 3, 1): ["daily"], date(2026, 2, 28): ["daily"]}
    assert plan.delete == [date(2026, 2, 27)]


def test_an_empty_series_plans_nothing():
    plan = select_retention([], RetentionPolicy(), newest_verified=date(2026, 3, 1), require_verified=True)

    assert plan.keep == {} and plan.delete == []


# -- the newest verified backup -------------------------------------------------------------------
def test_the_plan_lists_kept_dates_newest_first_with_every_rule_that_keeps_them():
    history = days(date(2026, 1, 1), date(2026, 3, 1))

    plan = select_retention(
        history, RetentionPolicy(daily=2, weekly=2, monthly=2), newest_verified=date(2026, 1, 5)
    )

    assert list(plan.keep.items()) == [
        (date(2026, 3, 1), ["daily", "weekly", "monthly"]),
        (date(2026, 2, 28), ["daily", "monthly"]),
        (date(2026, 2, 22), ["weekly"]),
        (date(2026, 1, 5), ["newest verified"]),
    ]
    assert plan.delete == sorted(set(history) - set(plan.keep), reverse=True)


def test_a_verified_date_absent_from_this_series_protects_nothing_and_is_not_reported_as_kept():
    # Per-database isolation: the marker of another database (or of a dump since removed) names a
    # date this database has no backup for; it must neither appear in the plan nor keep anything.
    history = [date(2026, 3, 1), date(2026, 2, 28), date(2026, 2, 26)]

    plan = select_retention(
        history, RetentionPolicy(daily=1, weekly=0, monthly=0), newest_verified=date(2026, 2, 27)
    )

    assert plan.keep == {date(2026, 3, 1): ["daily"]}
    assert plan.delete == [date(2026, 2, 28), date(2026, 2, 26)]


def test_the_newest_verified_backup_inside_a_window_keeps_both_reasons():
    history = days(date(2026, 2, 20), date(2026, 3, 1))

    plan = select_retention(
        history, RetentionPolicy(daily=3, weekly=0, monthly=0), newest_verified=date(2026, 2, 28)
    )

    assert plan.keep[date(2026, 2, 28)] == ["daily", "newest verified"]
    assert len(plan.keep) == 3


def test_until_a_first_verification_every_date_is_kept_and_says_why():
    history = [date(2026, 3, 1), date(2026, 2, 1), date(2026, 1, 1)]

    plan = select_retention(history, RetentionPolicy(daily=1, weekly=0, monthly=0), require_verified=True)

    assert list(plan.keep.items()) == [(d, ["no verified backup yet"]) for d in history]
    assert plan.delete == []


def test_once_a_backup_is_verified_a_series_requiring_verification_is_pruned_by_the_policy():
    history = [date(2026, 3, 1), date(2026, 2, 1), date(2026, 1, 1)]

    plan = select_retention(
        history,
        RetentionPolicy(daily=1, weekly=0, monthly=0),
        newest_verified=date(2026, 1, 1),
        require_verified=True,
    )

    assert plan.keep == {date(2026, 3, 1): ["daily"], date(2026, 1, 1): ["newest verified"]}
    assert plan.delete == [date(2026, 2, 1)]
