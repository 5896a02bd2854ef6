"""CJIS AC-7: consecutive failures per identifier, locking until released."""

from __future__ import annotations

from datetime import datetime

from alacop.core.ports import Throttle
from alacop.policy.cjis import Policy


def is_locked(throttle: Throttle | None) -> bool:
    return throttle is not None and throttle.locked_at is not None


def record_failure(throttle: Throttle | None, key: str, now: datetime, policy: Policy) -> Throttle:
    """Count one failure in a sliding window: the lock comes when `threshold` failures fall within it.

    Only the latest `threshold` times are kept, which is all the rule needs. A locked counter stays
    locked, whatever time passes, until someone releases it.
    """
    if throttle is not None and throttle.locked_at is not None:
        return throttle
    earlier = throttle.failure_times if throttle is not None else ()
    recent = (*(t for t in earlier if now - t < policy.lockout_window), now)
    recent = recent[-policy.lockout_threshold :]
    locked_at = now if len(recent) >= policy.lockout_threshold else None
    return Throttle(key=key, failure_times=recent, locked_at=locked_at)


def failures_in_window(throttle: Throttle | None, now: datetime, policy: Policy) -> int:
    if throttle is None:
        return 0
    return sum(1 for t in throttle.failure_times if now - t < policy.lockout_window)


def pending(throttle: Throttle | None, key: str, now: datetime, policy: Policy) -> Throttle:
    """An attempt in flight counts as a failure until it proves otherwise; it does not lock by itself."""
    earlier = throttle.failure_times if throttle is not None else ()
    recent = (*(t for t in earlier if now - t < policy.lockout_window), now)
    return Throttle(key=key, failure_times=recent[-policy.lockout_threshold :], locked_at=None)


def withdraw(throttle: Throttle, at: datetime) -> Throttle:
    """The attempt claimed at `at` succeeded: its provisional failure goes."""
    times = list(throttle.failure_times)
    if at in times:
        times.remove(at)
    return Throttle(key=throttle.key, failure_times=tuple(times), locked_at=throttle.locked_at)


def settle_failure(throttle: Throttle | None, key: str, now: datetime, policy: Policy) -> Throttle:
    """The claimed attempt failed: its provisional failure stands, and the lock comes at the threshold."""
    if throttle is None:
        return record_failure(None, key, now, policy)
    if throttle.locked_at is None and failures_in_window(throttle, now, policy) >= policy.lockout_threshold:
        return Throttle(key=throttle.key, failure_times=throttle.failure_times, locked_at=now)
    return throttle
