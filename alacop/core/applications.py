"""The registry of authorized applications (OpenID Connect clients): administrators only, each change audited.

Secrets are shown once, when created or rotated, and stored as a keyed hash. Redirect URIs are exact:
no wildcard, no fragment, https (http only for loopback hosts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from alacop.core.accounts import User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import Conflict, InvalidInput, NotFound
from alacop.core.oidc import (
    Client,
    ClientType,
    TokenFormat,
    client_secret_hash,
    new_client_id,
    new_client_secret,
    validate_client_id,
    validate_lifetime,
    validate_name,
    validate_redirect_uri,
    validate_scopes,
)

MAX_URIS = 10


@dataclass(frozen=True, slots=True)
class NewApplication:
    name: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    public: bool = False
    scopes: list[str] | None = None
    require_aal2: bool = True
    initiate_login_uri: str | None = None
    logo_url: str | None = None
    backchannel_logout_uri: str | None = None
    access_token_format: str = "jwt"
    access_token_seconds: int = 300
    refresh_token_seconds: int = 8 * 3600
    agency_oris: list[str] | None = None


@dataclass(frozen=True, slots=True)
class AppLink:
    """One line of My applications."""

    client_id: str
    name: str
    url: str
    logo_url: str | None


async def agency_ids_for(deps: Deps, oris: list[str]) -> tuple[str, ...]:
    """The ids of the agencies an application is limited to, by ORI; an unknown ORI is refused."""
    agency_ids: list[str] = []
    async with deps.store.read() as db:
        for ori in oris:
            agency = await db.agencies.by_ori(ori.strip().upper())
            if agency is None:
                raise NotFound(f"no agency with ORI {ori}", code="agency_not_found")
            agency_ids.append(agency.id)
    return tuple(dict.fromkeys(agency_ids))


def _uris(values: list[str], what: str) -> tuple[str, ...]:
    uris = tuple(dict.fromkeys(validate_redirect_uri(v) for v in values))
    if len(uris) > MAX_URIS:
        raise InvalidInput(f"at most {MAX_URIS} {what}", code="too_many_uris")
    return uris


def _optional_uri(value: str | None) -> str | None:
    return validate_redirect_uri(value) if value else None


def _public_view(client: Client) -> dict[str, object]:
    """What the audit trail records of an application: everything but the secret's hash."""
    return {
        "name": client.name,
        "client_type": str(client.client_type),
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "scopes": list(client.scopes),
        "require_aal2": client.require_aal2,
        "initiate_login_uri": client.initiate_login_uri,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "access_token_format": str(client.access_token_format),
        "access_token_seconds": client.access_token_seconds,
        "refresh_token_seconds": client.refresh_token_seconds,
        "agency_ids": list(client.agency_ids),
        "disabled": client.disabled_at is not None,
    }


class Applications:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def create(self, actor: Actor, new: NewApplication, ctx: RequestContext) -> tuple[Client, str | None]:
        """Register an application; returns it and, for a confidential one, its secret (shown once)."""
        actor.require_admin(change=True)
        if not new.redirect_uris:
            raise InvalidInput("give at least one redirect URI", code="redirect_uri_required")
        try:
            token_format = TokenFormat(new.access_token_format)
        except ValueError as exc:
            raise InvalidInput("the access token format is jwt or opaque", code="invalid_token_format") from exc
        agency_ids = await agency_ids_for(self._deps, new.agency_oris or [])
        secret = None if new.public else new_client_secret()
        now = self._deps.clock.now()
        client = Client(
            client_id=new_client_id(),
            name=validate_name(new.name),
            client_type=ClientType.PUBLIC if new.public else ClientType.CONFIDENTIAL,
            redirect_uris=_uris(new.redirect_uris, "redirect URIs"),
            post_logout_redirect_uris=_uris(new.post_logout_redirect_uris, "post-logout URIs"),
            scopes=validate_scopes(new.scopes or ["openid", "profile", "email"]),
            require_aal2=new.require_aal2,
            initiate_login_uri=_optional_uri(new.initiate_login_uri),
            logo_url=_optional_uri(new.logo_url),
            backchannel_logout_uri=_optional_uri(new.backchannel_logout_uri),
            access_token_format=token_format,
            access_token_seconds=validate_lifetime(
                new.access_token_seconds, low=60, high=3600, what="the access token lifetime"
            ),
            refresh_token_seconds=validate_lifetime(
                new.refresh_token_seconds, low=300, high=30 * 86400, what="the refresh token lifetime"
            ),
            agency_ids=agency_ids,
            created_at=now,
            secret_hash=client_secret_hash(self._deps.pepper, secret) if secret else None,
        )
        async with self._deps.store.transaction() as tx:
            await tx.clients.add(client)
            await tx.audit.append(
                AuditEvent(
                    EventType.CLIENT_CREATED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    details={"client_id": client.client_id, "before": None, "after": _public_view(client)},
                ),
                ctx,
            )
        return client, secret

    async def registered(self, actor: Actor) -> list[Client]:
        actor.require_admin(change=False)
        async with self._deps.store.read() as db:
            return list(await db.clients.list())

    async def _get(self, client_id: str) -> Client:
        async with self._deps.store.read() as db:
            client = await db.clients.get(validate_client_id(client_id))
        if client is None:
            raise NotFound("no such application", code="client_not_found")
        return client

    async def disable(self, actor: Actor, client_id: str, ctx: RequestContext) -> Client:
        actor.require_admin(change=True)
        client = await self._get(client_id)
        if client.disabled_at is not None:
            raise Conflict("the application is already disabled", code="client_disabled")
        now = self._deps.clock.now()
        disabled = replace(client, disabled_at=now)
        async with self._deps.store.transaction() as tx:
            await tx.clients.update(disabled)
            await tx.audit.append(
                AuditEvent(
                    EventType.CLIENT_DISABLED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    details={
                        "client_id": client.client_id,
                        "before": {"disabled": False},
                        "after": {"disabled": True},
                    },
                ),
                ctx,
            )
        return disabled

    async def rotate_secret(self, actor: Actor, client_id: str, ctx: RequestContext) -> tuple[Client, str]:
        """A new secret, shown once; the old one stops working at once."""
        actor.require_admin(change=True)
        client = await self._get(client_id)
        if client.public:
            raise Conflict("a public application has no secret", code="client_public")
        secret = new_client_secret()
        now = self._deps.clock.now()
        rotated = replace(client, secret_hash=client_secret_hash(self._deps.pepper, secret), secret_rotated_at=now)
        async with self._deps.store.transaction() as tx:
            await tx.clients.update(rotated)
            await tx.audit.append(
                AuditEvent(
                    EventType.CLIENT_SECRET_ROTATED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    details={
                        "client_id": client.client_id,
                        "before": {
                            "secret_rotated_at": client.secret_rotated_at.isoformat()
                            if client.secret_rotated_at
                            else None
                        },
                        "after": {"secret_rotated_at": now.isoformat()},
                    },
                ),
                ctx,
            )
        return rotated, secret

    async def for_user(self, user: User) -> list[AppLink]:
        """My applications: the enabled applications the user's agency may use that have a start address."""
        async with self._deps.store.read() as db:
            clients = await db.clients.list()
        return [
            AppLink(c.client_id, c.name, c.initiate_login_uri, c.logo_url)
            for c in clients
            if c.active and c.allows_agency(user.agency_id) and c.initiate_login_uri
        ]
