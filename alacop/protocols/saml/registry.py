"""The registry of SAML applications (service providers): administrators only, each change audited.

An application is registered from its own metadata: entity ID, HTTP-POST consumer addresses and signing
certificates come from there and nowhere else, so a request can only ever be answered to an address
the application published, and its signature is checked against a certificate it published.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from alacop.core.accounts import User
from alacop.core.applications import AppLink, agency_ids_for
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import Conflict, NotFound
from alacop.core.oidc import validate_name, validate_redirect_uri
from alacop.core.saml import (
    ATTRIBUTES,
    ServiceProvider,
    new_nameid_salt,
    new_sp_id,
    validate_attributes,
    validate_nameid,
    validate_relay_state,
    validate_sp_id,
)
from alacop.protocols.saml.metadata import parse_sp_metadata

START_PATH = "/saml/start/"


@dataclass(frozen=True, slots=True)
class NewServiceProvider:
    name: str
    metadata: bytes
    attributes: list[str] | None = None
    require_aal2: bool = True
    nameid: str = "persistent"
    idp_initiated: bool = False
    relay_state: str | None = None
    logo_url: str | None = None
    start_url: str | None = None
    agency_oris: list[str] | None = None


def public_view(sp: ServiceProvider) -> dict[str, object]:
    """What the audit trail records of an application (the NameID key stays out)."""
    return {
        "name": sp.name,
        "entity_id": sp.entity_id,
        "acs": [a.url for a in sp.acs],
        "certificates": len(sp.certificates),
        "authn_requests_signed": sp.authn_requests_signed,
        "nameid_format": str(sp.nameid_format),
        "attributes": list(sp.attributes),
        "require_aal2": sp.require_aal2,
        "idp_initiated": sp.idp_initiated,
        "start_url": sp.start_url,
        "agency_ids": list(sp.agency_ids),
        "disabled": sp.disabled_at is not None,
    }


class ServiceProviders:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def add(self, actor: Actor, new: NewServiceProvider, ctx: RequestContext) -> ServiceProvider:
        actor.require_admin(change=True)
        parsed = parse_sp_metadata(new.metadata)
        agency_ids = await agency_ids_for(self._deps, new.agency_oris or [])
        sp = ServiceProvider(
            id=new_sp_id(),
            entity_id=parsed.entity_id,
            name=validate_name(new.name),
            acs=parsed.acs,
            certificates=parsed.certificates,
            created_at=self._deps.clock.now(),
            nameid_salt=new_nameid_salt(),
            authn_requests_signed=parsed.authn_requests_signed,
            nameid_format=validate_nameid(new.nameid),
            attributes=validate_attributes(new.attributes) if new.attributes is not None else ATTRIBUTES,
            require_aal2=new.require_aal2,
            idp_initiated=new.idp_initiated,
            default_relay_state=validate_relay_state(new.relay_state),
            logo_url=validate_redirect_uri(new.logo_url) if new.logo_url else None,
            start_url=validate_redirect_uri(new.start_url) if new.start_url else None,
            agency_ids=agency_ids,
        )
        async with self._deps.store.transaction() as tx:
            await tx.saml_sps.add(sp)
            await tx.audit.append(
                AuditEvent(
                    EventType.SAML_SP_ADDED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    details={"sp_id": sp.id, "before": None, "after": public_view(sp)},
                ),
                ctx,
            )
        return sp

    async def registered(self, actor: Actor) -> list[ServiceProvider]:
        actor.require_admin(change=False)
        async with self._deps.store.read() as db:
            return list(await db.saml_sps.list())

    async def disable(self, actor: Actor, sp_id: str, ctx: RequestContext) -> ServiceProvider:
        actor.require_admin(change=True)
        async with self._deps.store.read() as db:
            sp = await db.saml_sps.get(validate_sp_id(sp_id))
        if sp is None:
            raise NotFound("no such application", code="sp_not_found")
        if sp.disabled_at is not None:
            raise Conflict("the application is already disabled", code="sp_disabled")
        disabled = replace(sp, disabled_at=self._deps.clock.now())
        async with self._deps.store.transaction() as tx:
            await tx.saml_sps.update(disabled)
            await tx.audit.append(
                AuditEvent(
                    EventType.SAML_SP_DISABLED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    details={"sp_id": sp.id, "before": {"disabled": False}, "after": {"disabled": True}},
                ),
                ctx,
            )
        return disabled

    async def for_user(self, user: User) -> list[AppLink]:
        """My applications: enabled SAML applications the user's agency may use, with somewhere to start.

        IdP-initiated applications start here (/saml/start/<id>); the others at their own start address."""
        async with self._deps.store.read() as db:
            sps = await db.saml_sps.list()
        links = []
        for sp in sps:
            if not sp.active or not sp.allows_agency(user.agency_id):
                continue
            url = START_PATH + sp.id if sp.idp_initiated else sp.start_url
            if url:
                links.append(AppLink(sp.id, sp.name, url, sp.logo_url))
        return links
