"""Token revocation (RFC 7009) and introspection (RFC 7662), for the client that holds the token only.

Revoking either token of a grant revokes its whole family: the access tokens and the refresh token
issued along the chain of rotations (RFC 7009 2.1 allows, and for refresh tokens asks, as much).
"""

from __future__ import annotations

from alacop.core.audit import EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.oidc import Client, IssuedToken
from alacop.protocols.oidc._util import INVALID_REQUEST, NO_STORE, OAuthError, client_event, epoch, secret_hash
from alacop.protocols.oidc.clientauth import authenticate
from alacop.protocols.oidc.tokens import TokenResponse

HINTS = ("access_token", "refresh_token")


def _form(items: list[tuple[str, str]]) -> dict[str, str]:
    names = [name for name, _ in items]
    if any(names.count(n) > 1 for n in set(names)):
        raise OAuthError(INVALID_REQUEST, "a parameter was repeated")
    form = dict(items)
    if not form.get("token"):
        raise OAuthError(INVALID_REQUEST, "token is required")
    hint = form.get("token_type_hint")
    if hint is not None and hint not in HINTS:
        raise OAuthError("unsupported_token_type", "token_type_hint is access_token or refresh_token")
    return form


async def _find(deps: Deps, token: str, hint: str | None) -> tuple[IssuedToken | None, str]:
    if len(token) > 4096:
        return None, ""
    digest = secret_hash(token)
    order = ("refresh_token", "access_token") if hint == "refresh_token" else ("access_token", "refresh_token")
    async with deps.store.read() as tx:
        for kind in order:
            if kind == "access_token":
                found = await tx.tokens.by_access_hash(digest)
            else:
                found = await tx.tokens.by_refresh_hash(digest)
            if found is not None:
                return found, kind
    return None, ""


async def _refused(
    deps: Deps, exc: OAuthError, client: Client | None, endpoint: str, ctx: RequestContext
) -> TokenResponse:
    async with deps.store.transaction() as tx:
        await tx.audit.append(
            client_event(
                EventType.AUTHORIZATION_REFUSED,
                Outcome.FAILURE,
                exc.error,
                client,
                details={"endpoint": endpoint, "description": exc.description},
            ),
            ctx,
        )
    return TokenResponse(exc.status, dict(exc.body()), [*NO_STORE, *exc.headers])


async def revoke(
    deps: Deps, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
) -> TokenResponse:
    client: Client | None = None
    try:
        form = _form(items)
        client = await authenticate(deps, form, authorization)
    except OAuthError as exc:
        return await _refused(deps, exc, client, "revocation", ctx)
    record, kind = await _find(deps, form["token"], form.get("token_type_hint"))
    # Unknown, foreign or already revoked tokens get the same empty 200 (RFC 7009 2.2).
    if record is not None and record.client_id == client.client_id and record.revoked_at is None:
        now = deps.clock.now()
        async with deps.store.transaction() as tx:
            revoked = await tx.tokens.revoke_family(record.family_id, now)
            user = await tx.users.get(record.user_id) if record.user_id else None
            await tx.audit.append(
                client_event(
                    EventType.TOKEN_REVOKED,
                    Outcome.SUCCESS,
                    "revoked_by_client",
                    client,
                    user=user,
                    domain=deps.domain,
                    details={"family_id": record.family_id, "token_type": kind, "revoked": revoked},
                ),
                ctx,
            )
    return TokenResponse(200, {}, list(NO_STORE))


async def introspect(
    deps: Deps, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext, issuer: str
) -> TokenResponse:
    client: Client | None = None
    try:
        form = _form(items)
        client = await authenticate(deps, form, authorization, allow_public=False)
    except OAuthError as exc:
        return await _refused(deps, exc, client, "introspection", ctx)
    record, kind = await _find(deps, form["token"], form.get("token_type_hint"))
    now = deps.clock.now()
    if record is None or record.client_id != client.client_id or record.revoked_at is not None:
        return TokenResponse(200, {"active": False}, list(NO_STORE))
    if kind == "access_token":
        expires = record.access_expires_at
        active = now < expires
    else:
        assert record.refresh_expires_at is not None
        expires = record.refresh_expires_at
        active = record.refreshed_at is None and now < expires
    if not active:
        return TokenResponse(200, {"active": False}, list(NO_STORE))
    body: dict[str, object] = {
        "active": True,
        "client_id": record.client_id,
        "sub": record.user_id or record.client_id,
        "aud": record.client_id,
        "iss": issuer,
        "iat": epoch(record.issued_at),
        "exp": epoch(expires),
    }
    if record.scope:
        body["scope"] = record.scope
    if kind == "access_token":
        body["token_type"] = "Bearer"
        body["jti"] = record.id
    return TokenResponse(200, body, list(NO_STORE))
