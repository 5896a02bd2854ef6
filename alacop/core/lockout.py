"""CJIS AC-7: consecutive failures per identifier, locking until released."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from alacop.core.ports import Throttle
from alacop.policy.cjis import Policy


def is_locked(throttle: Throttle | None) -> bool:
    return throttle is not None and throttle.locked_at is not None


def record_failure(throttle: Throttle | None, key: str, now: datetime, policy: Policy) -> Throttle:
    """Count one failure; the count restarts when the previous one is older than the window."""
    if (
        throttle is None
        or throttle.window_started_at is None
        or (now - throttle.window_started_at >= policy.lockout_window)
    ):
        current = Throttle(key=key, failures=1, window_started_at=now, locked_at=None)
    else:
        current = replace(throttle, failures=throttle.failures + 1)
    if current.failures >= policy.lockout_threshold and current.locked_at is None:
        current = replace(current, locked_at=now)
    return current
