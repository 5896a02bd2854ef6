"""The userinfo endpoint (OpenID Connect Core 5.3) and the bearer-token check behind it (RFC 6750)."""

from __future__ import annotations

from dataclasses import dataclass

from alacop.core.deps import Deps
from alacop.core.oidc import IssuedToken
from alacop.protocols.oidc._util import (
    INSUFFICIENT_SCOPE,
    INVALID_REQUEST,
    INVALID_TOKEN,
    NO_STORE,
    Headers,
    OAuthError,
    secret_hash,
)
from alacop.protocols.oidc.claims import user_claims


@dataclass(frozen=True, slots=True)
class UserinfoResponse:
    status: int
    body: dict[str, object]
    headers: Headers


def _challenge(error: str = "", description: str = "") -> Headers:
    if not error:
        return [("WWW-Authenticate", 'Bearer realm="userinfo"')]
    return [("WWW-Authenticate", f'Bearer realm="userinfo", error="{error}", error_description="{description}"')]


def bearer(authorization: str | None, form_token: str | None) -> str:
    """The access token from the header or, for POST, the form body (RFC 6750 2.1, 2.2); never both."""
    header_token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            header_token = value.strip()
    if header_token and form_token:
        raise OAuthError(INVALID_REQUEST, "one access token per request", status=400)
    token = header_token or form_token
    if not token:
        raise OAuthError("", "", status=401, headers=_challenge())
    return token


async def active_token(deps: Deps, token: str) -> IssuedToken:
    """The stored token behind a bearer value: not revoked, not expired, its client still enabled."""
    now = deps.clock.now()
    async with deps.store.read() as tx:
        record = await tx.tokens.by_access_hash(secret_hash(token)) if len(token) <= 4096 else None
        client = await tx.clients.get(record.client_id) if record else None
    if (
        record is None
        or record.revoked_at is not None
        or now >= record.access_expires_at
        or client is None
        or not client.active
    ):
        description = "the access token is not valid"
        raise OAuthError(INVALID_TOKEN, description, status=401, headers=_challenge(INVALID_TOKEN, description))
    return record


async def userinfo(deps: Deps, authorization: str | None, form_token: str | None) -> UserinfoResponse:
    try:
        record = await active_token(deps, bearer(authorization, form_token))
        scopes = set(record.scope.split())
        if record.user_id is None or "openid" not in scopes:
            description = "the token was not issued for OpenID Connect"
            raise OAuthError(
                INSUFFICIENT_SCOPE, description, status=403, headers=_challenge(INSUFFICIENT_SCOPE, description)
            )
        async with deps.store.read() as tx:
            user = await tx.users.get(record.user_id)
            agency = await tx.agencies.get(user.agency_id) if user else None
            client = await tx.clients.get(record.client_id)
        # The application's agency restriction may have narrowed since the token was issued.
        if user is None or not user.active or client is None or not client.allows_agency(user.agency_id):
            description = "the access token is not valid"
            raise OAuthError(INVALID_TOKEN, description, status=401, headers=_challenge(INVALID_TOKEN, description))
    except OAuthError as exc:
        body: dict[str, object] = dict(exc.body()) if exc.error else {}
        return UserinfoResponse(exc.status, body, [*NO_STORE, *exc.headers])
    return UserinfoResponse(200, user_claims(user, agency, scopes, deps.domain), list(NO_STORE))
