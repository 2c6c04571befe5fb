"""Grandfather-father-son selection: which dated backups survive (pure function, no servers)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from mlops.backups.retention import RetentionPolicy, select_retention

# 2026-01-01 .. 2026-03-01: 60 daily backups. 2026-03-01 is a Sunday, so ISO weeks end on
# Mar 1, Feb 22, Feb 15, Feb 8, ...
HISTORY = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]


def d(month: int, day: int) -> date:
    return date(2026, month, day)


def test_sixty_day_history_keeps_exactly_the_daily_weekly_monthly_and_newest_verified_set():
    plan = select_retention(HISTORY, RetentionPolicy(daily=7, weekly=4, monthly=3), newest_verified=d(2, 20))

    assert set(plan.keep) == {
        # 7 daily: the newest seven days
        d(3, 1), d(2, 28), d(2, 27), d(2, 26), d(2, 25), d(2, 24), d(2, 23),
        # 4 weekly: the newest backup (the Sunday) of the four newest ISO weeks
        d(2, 22), d(2, 15), d(2, 8),
        # 3 monthly: the newest backup of March, February and January
        d(1, 31),
        # the newest verified backup (verifications failed since Feb 20)
        d(2, 20),
    }  # fmt: skip
    assert plan.keep[d(3, 1)] == ["daily", "weekly", "monthly"]
    assert plan.keep[d(2, 28)] == ["daily", "monthly"]
    assert plan.keep[d(2, 20)] == ["newest verified"]
    assert len(plan.delete) == 60 - 12
    assert plan.delete[0] == d(2, 21) and plan.delete[-1] == d(1, 1)  # newest first


def test_the_seed_default_keeps_seven_dailies_plus_older_weekly_and_monthly_backups():
    plan = select_retention(HISTORY, RetentionPolicy(), newest_verified=d(3, 1))

    assert sorted(plan.keep) == [
        d(1, 31),  # monthly: only three months exist, so January's newest is the oldest kept
        d(2, 8), d(2, 15), d(2, 22),  # weekly: with Mar 1, the newest backup of the 4 newest ISO weeks
        d(2, 23), d(2, 24), d(2, 25), d(2, 26), d(2, 27), d(2, 28), d(3, 1),  # daily: 7
    ]  # fmt: skip


def test_gaps_in_history_count_backups_not_calendar_days():
    every_third_day = HISTORY[::-3]  # Mar 1, Feb 26, Feb 23, ...
    plan = select_retention(
        every_third_day, RetentionPolicy(daily=3, weekly=0, monthly=0), newest_verified=d(3, 1)
    )

    assert sorted(plan.keep) == [d(2, 23), d(2, 26), d(3, 1)]


def test_newest_verified_backup_survives_even_outside_every_window():
    plan = select_retention(HISTORY, RetentionPolicy(daily=2, weekly=0, monthly=0), newest_verified=d(1, 5))

    assert sorted(plan.keep) == [d(1, 5), d(2, 28), d(3, 1)]
    assert d(1, 5) not in plan.delete


def test_nothing_is_deleted_while_no_backup_was_ever_verified():
    plan = select_retention(HISTORY, RetentionPolicy(daily=1, weekly=0, monthly=0), require_verified=True)

    assert plan.delete == []
    assert len(plan.keep) == 60


def test_a_series_without_verification_is_pruned_by_policy_alone():
    plan = select_retention(HISTORY, RetentionPolicy(daily=1, weekly=0, monthly=2))

    assert sorted(plan.keep) == [d(2, 28), d(3, 1)]  # March and February each keep their newest


def test_a_policy_that_keeps_nothing_is_refused():
    with pytest.raises(ValueError, match="keeps nothing"):
        RetentionPolicy(daily=0, weekly=0, monthly=0)
