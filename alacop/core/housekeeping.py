"""Periodic upkeep that every instance may run: it is idempotent and needs no coordination."""

from __future__ import annotations

from alacop.core.deps import Deps


async def purge_expired_flows(deps: Deps) -> int:
    """Abandoned flows hold CSRF tokens and typed identifiers; they go once they expire."""
    async with deps.store.transaction() as tx:
        return await tx.flows.purge_expired(deps.clock.now())
