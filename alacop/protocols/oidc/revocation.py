"""Token revocation (RFC 7009) and introspection (RFC 7662), for the client that holds the token only.

Authlib's `RevocationEndpoint` and `IntrospectionEndpoint` (server.py) authenticate the client and
decide; this module reads the token the request names first, and afterwards revokes and audits.
Revoking either token of a grant revokes its whole family: the access tokens and the refresh token
issued along the chain of rotations (RFC 7009 2.1 allows, and for refresh tokens asks, as much).
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import errors as oauth_errors

from alacop.core.audit import EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.protocols.oidc._util import client_event, secret_hash
from alacop.protocols.oidc.server import Loaded, PortalRequest, PortalServer, decide
from alacop.protocols.oidc.tokens import TokenResponse, audit_refusal, check_shape, new_state, read_client, refusal

PATHS = {"revocation": "/oauth/revoke", "introspection": "/oauth/introspect"}


async def _find(deps: Deps, state: Loaded, token: str, hint: str | None) -> None:
    if not token or len(token) > 4096:
        return
    digest = secret_hash(token)
    order = ("refresh_token", "access_token") if hint == "refresh_token" else ("access_token", "refresh_token")
    async with deps.store.read() as tx:
        for kind in order:
            if kind == "access_token":
                found = await tx.tokens.by_access_hash(digest)
            else:
                found = await tx.tokens.by_refresh_hash(digest)
            if found is not None:
                state.found, state.found_kind = found, kind
                return


async def _run(
    deps: Deps,
    server: PortalServer,
    endpoint: str,
    items: list[tuple[str, str]],
    authorization: str | None,
    ctx: RequestContext,
) -> tuple[Loaded, TokenResponse]:
    form = dict(items)
    state = new_state(deps, server.issuer)
    try:
        client_id = check_shape(items, authorization)
    except oauth_errors.OAuth2Error as exc:
        await audit_refusal(deps, state, endpoint, exc, form, ctx)
        return state, refusal(exc)
    await read_client(deps, state, client_id)
    if state.client is not None:
        await _find(deps, state, form.get("token", ""), form.get("token_type_hint"))
    request = PortalRequest("POST", server.base + PATHS[endpoint], items, authorization)
    answer = decide(state, lambda: server.create_endpoint_response(endpoint, request))
    if state.refused is not None:
        await audit_refusal(deps, state, endpoint, state.refused, form, ctx)
    return state, TokenResponse(answer.status, answer.body, answer.headers)


async def revoke(
    deps: Deps, server: PortalServer, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
) -> TokenResponse:
    state, answer = await _run(deps, server, "revocation", items, authorization, ctx)
    record = state.revoke
    # Unknown, foreign or already revoked tokens get the same empty 200 (RFC 7009 2.2).
    if record is not None and state.client is not None:
        async with deps.store.transaction() as tx:
            revoked = await tx.tokens.revoke_family(record.family_id, state.now)
            user = await tx.users.get(record.user_id) if record.user_id else None
            await tx.audit.append(
                client_event(
                    EventType.TOKEN_REVOKED,
                    Outcome.SUCCESS,
                    "revoked_by_client",
                    state.client,
                    user=user,
                    domain=deps.domain,
                    details={"family_id": record.family_id, "token_type": state.found_kind, "revoked": revoked},
                ),
                ctx,
            )
    return answer


async def introspect(
    deps: Deps, server: PortalServer, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
) -> TokenResponse:
    return (await _run(deps, server, "introspection", items, authorization, ctx))[1]
