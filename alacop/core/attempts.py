"""Claim an attempt before checking it, so parallel guesses cannot outrun the lockout (CJIS AC-7).

Each attempt first records a provisional failure under a row lock and is refused once the
identifier's failures in the window (provisional ones included) reach the threshold. A success
withdraws its provisional failure; a failure lets it stand and locks at the threshold. However many
requests arrive at once, no more than `lockout_threshold` guesses are ever checked in a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alacop.core import lockout
from alacop.core.deps import Deps
from alacop.core.ports import Throttle, Transaction


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    at: datetime


async def claim(deps: Deps, key: str) -> Claim | None:
    """A claim to check one guess now, or None when the identifier is locked or has no guesses left."""
    now = deps.clock.now()
    async with deps.store.transaction() as tx:
        throttle = await tx.throttles.get(key, for_update=True)
        in_window = lockout.failures_in_window(throttle, now, deps.policy)
        if lockout.is_locked(throttle) or in_window >= deps.policy.lockout_threshold:
            return None
        await tx.throttles.put(lockout.pending(throttle, key, now, deps.policy))
    return Claim(key=key, at=now)


async def release(deps: Deps, claimed: Claim) -> None:
    async with deps.store.transaction() as tx:
        throttle = await tx.throttles.get(claimed.key, for_update=True)
        if throttle is not None:
            await tx.throttles.put(lockout.withdraw(throttle, claimed.at))


async def settle(tx: Transaction, claimed: Claim, deps: Deps) -> tuple[Throttle, bool]:
    """Inside the caller's failure transaction: the updated counter, and whether this failure locked it."""
    before = await tx.throttles.get(claimed.key, for_update=True)
    updated = lockout.settle_failure(before, claimed.key, deps.clock.now(), deps.policy)
    await tx.throttles.put(updated)
    newly_locked = updated.locked_at is not None and (before is None or before.locked_at is None)
    return updated, newly_locked
