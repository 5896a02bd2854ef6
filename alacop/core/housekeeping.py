"""Periodic upkeep that every instance may run: it is idempotent and needs no coordination."""

from __future__ import annotations

from alacop.core.deps import Deps


async def purge_expired_flows(deps: Deps) -> int:
    """Abandoned flows hold CSRF tokens and typed identifiers; they go once they expire."""
    async with deps.store.transaction() as tx:
        return await tx.flows.purge_expired(deps.clock.now())


async def purge_expired_saml_requests(deps: Deps) -> int:
    """SAML requests are kept past their answer until they expire, so a replay is still recognised;
    after that a replay's IssueInstant is too old anyway."""
    async with deps.store.transaction() as tx:
        return await tx.saml_requests.purge_expired(deps.clock.now())
