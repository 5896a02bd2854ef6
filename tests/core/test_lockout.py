"""Unit tests for CJIS AC-7 lockout counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alacop.core.lockout import failures_in_window, is_locked, record_failure
from alacop.core.ports import Throttle
from alacop.policy.cjis import Policy

POLICY = Policy()
KEY = "jsmith@alacop.gov"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def fail_at(*moments: datetime, throttle: Throttle | None = None, policy: Policy = POLICY) -> Throttle:
    assert moments
    for moment in moments:
        throttle = record_failure(throttle, KEY, moment, policy)
    assert throttle is not None
    return throttle


def minutes(*values: float) -> list[datetime]:
    return [T0 + timedelta(minutes=v) for v in values]


def test_first_failure_starts_a_window() -> None:
    throttle = record_failure(None, KEY, T0, POLICY)
    assert throttle == Throttle(key=KEY, failure_times=(T0,), locked_at=None)
    assert is_locked(throttle) is False


def test_counts_to_the_threshold_and_locks_at_the_fifth() -> None:
    moments = minutes(0, 1, 2, 3, 4)
    throttle: Throttle | None = None
    for number, moment in enumerate(moments, start=1):
        throttle = record_failure(throttle, KEY, moment, POLICY)
        assert throttle.failures == number
        assert throttle.failure_times[0] == T0
        if number < 5:
            assert throttle.locked_at is None
            assert is_locked(throttle) is False
    assert throttle is not None
    assert throttle.locked_at == moments[4]
    assert is_locked(throttle) is True


def test_fifth_failure_just_inside_the_window_locks() -> None:
    throttle = fail_at(*minutes(0, 0, 0, 0), T0 + timedelta(minutes=15) - timedelta(microseconds=1))
    assert throttle.failures == 5
    assert is_locked(throttle)


def test_failures_older_than_fifteen_minutes_drop_out() -> None:
    throttle = fail_at(*minutes(0, 0, 0, 0, 15))
    assert throttle.failures == 1
    assert throttle.failure_times == (T0 + timedelta(minutes=15),)
    assert throttle.locked_at is None


def test_window_restart_then_counts_again() -> None:
    throttle = fail_at(*minutes(0, 1, 2, 3, 20, 21, 22, 23))
    assert throttle.failures == 4
    assert not is_locked(throttle)
    throttle = fail_at(T0 + timedelta(minutes=24), throttle=throttle)
    assert is_locked(throttle)
    assert throttle.locked_at == T0 + timedelta(minutes=24)


def test_locked_stays_locked_within_the_window() -> None:
    throttle = fail_at(*minutes(0, 1, 2, 3, 4))
    locked_at = throttle.locked_at
    later = fail_at(*minutes(5, 6), throttle=throttle)
    assert later == throttle  # a locked counter is frozen until released
    assert later.locked_at == locked_at
    assert is_locked(later)


def test_locked_stays_locked_after_the_window() -> None:
    throttle = fail_at(*minutes(0, 1, 2, 3, 4))
    later = fail_at(T0 + timedelta(minutes=30), throttle=throttle)
    assert is_locked(later)


def test_five_consecutive_failures_across_the_window_boundary_lock() -> None:
    throttle = fail_at(*minutes(0, 14, 15, 16, 17, 18))
    assert is_locked(throttle)


def test_threshold_follows_policy() -> None:
    policy = Policy(lockout_threshold=3, lockout_window_minutes=30)
    throttle = fail_at(*minutes(0, 10), policy=policy)
    assert not is_locked(throttle)
    throttle = fail_at(T0 + timedelta(minutes=20), throttle=throttle, policy=policy)
    assert is_locked(throttle)


def test_only_the_latest_threshold_times_are_kept() -> None:
    policy = Policy(lockout_threshold=3)
    throttle = fail_at(*minutes(0, 20, 40), policy=policy)
    assert throttle.failures == 1
    throttle = fail_at(*minutes(41, 42), throttle=throttle, policy=policy)
    assert len(throttle.failure_times) == 3
    assert is_locked(throttle)


def test_failures_in_window() -> None:
    throttle = fail_at(*minutes(0, 1, 2))
    assert failures_in_window(throttle, T0 + timedelta(minutes=3), POLICY) == 3
    assert failures_in_window(throttle, T0 + timedelta(minutes=15, seconds=30), POLICY) == 2
    assert failures_in_window(None, T0, POLICY) == 0


def test_is_locked() -> None:
    assert is_locked(None) is False
    assert is_locked(Throttle(KEY, (T0,) * 4, None)) is False
    assert is_locked(Throttle(KEY, (), T0)) is True
