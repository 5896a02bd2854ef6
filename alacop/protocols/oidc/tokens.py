"""The token endpoint (RFC 6749 3.2, 4.1.3, 4.4, 6; RFC 7636 4.6; OpenID Connect Core 3.1.3).

Authlib's grants decide (server.py); this module reads what a request names before they run, mints
the tokens they ask for, and afterwards, in one transaction, spends what the grant consumed (the
code, or the refresh token) conditionally, stores the new token's hashes and appends the audit
event. Losing the conditional spend means the same code or refresh token was used twice at once:
everything it produced is revoked and the reuse is audited, as when Authlib sees it spent already.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal
from weakref import WeakKeyDictionary

from authlib.oauth2.rfc6749 import errors as oauth_errors
from joserfc import jwt

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.groupcommit import GroupCommit
from alacop.core.oidc import CLIENT_ID_FORMAT, Client, IssuedToken, TokenFormat
from alacop.core.ports import Transaction
from alacop.protocols.oidc._util import Headers, client_event, epoch, new_secret, secret_hash
from alacop.protocols.oidc.keys import KeyRing
from alacop.protocols.oidc.server import (
    Answer,
    Loaded,
    OAuthClient,
    PortalRequest,
    PortalServer,
    basic_credentials,
    decide,
    loaded,
)

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
TOKEN_PATH = "/oauth/token"


@dataclass(frozen=True, slots=True)
class TokenResponse:
    status: int
    body: dict[str, object]
    headers: Headers


def refusal(error: oauth_errors.OAuth2Error) -> TokenResponse:
    status, body, headers = error()
    return TokenResponse(status, body, list(headers))


def check_shape(items: list[tuple[str, str]], authorization: str | None) -> str | None:
    """What Authlib leaves to the server: each parameter once (RFC 6749 3.2), one client authentication
    method (RFC 6749 2.3), a Basic header that decodes. Returns the client id the request names."""
    form = dict(items)
    if len(form) != len(items):
        raise oauth_errors.InvalidRequestError("a parameter was repeated")
    basic = basic_credentials(authorization)
    if basic is None:
        return form.get("client_id")
    # Empty parameters count as omitted (RFC 6749 3.1).
    if form.get("client_secret"):
        raise oauth_errors.InvalidRequestError("use one client authentication method")
    if form.get("client_id") not in (None, "", basic[0]):
        raise oauth_errors.InvalidRequestError("client_id does not match the credentials")
    return basic[0]


async def read_client(deps: Deps, state: Loaded, client_id: str | None) -> None:
    if client_id and CLIENT_ID_FORMAT.fullmatch(client_id):
        async with deps.store.read() as tx:
            state.client = await tx.clients.get(client_id)


def new_state(deps: Deps, issuer: str) -> Loaded:
    return Loaded(now=deps.clock.now(), issuer=issuer, pepper=deps.pepper, domain=deps.domain)


async def audit_refusal(
    deps: Deps,
    state: Loaded,
    endpoint: str,
    error: oauth_errors.OAuth2Error,
    form: Mapping[str, str],
    ctx: RequestContext,
) -> None:
    # A client that failed to authenticate is not named as the actor: only the id it claimed.
    client = None if isinstance(error, oauth_errors.InvalidClientError) else state.client
    details: dict[str, object] = {"endpoint": endpoint, "description": error.description or ""}
    if endpoint == "token":
        details["grant_type"] = form.get("grant_type", "")[:40]
    async with deps.store.transaction() as tx:
        await tx.audit.append(
            client_event(
                EventType.AUTHORIZATION_REFUSED,
                Outcome.FAILURE,
                error.error or "invalid_request",
                client,
                client_id=form.get("client_id") or (state.client.client_id if state.client else None),
                details=details,
            ),
            ctx,
        )


@dataclass(frozen=True, slots=True)
class _Write:
    """What one token request's part of a shared transaction decided."""

    outcome: Literal["written", "lost", "stale", "ended"]
    token: IssuedToken | None = None
    event: AuditEvent | None = None
    ctx: RequestContext | None = None


async def _finish(tx: Transaction, results: list[_Write]) -> None:
    """The batch's new tokens in one statement, then their events, in the order decided."""
    written = [r for r in results if r.outcome == "written"]
    await tx.tokens.add_many([r.token for r in written if r.token is not None])
    for r in written:
        assert r.event is not None
        assert r.ctx is not None
        await tx.audit.append(r.event, r.ctx)


class ClientCache:
    """Applications as last read, so a token request needs no read of its own (one process's copy).

    Never trusted alone: a request decided on a cached application is written only if, inside the
    write's transaction, the application's row is still exactly what was decided on (`current`);
    otherwise, and on any refusal, the request is decided again on a fresh read. So a disabled
    application, a rotated secret or a narrowed scope takes effect at once, as without the cache.
    """

    TTL = timedelta(seconds=60)
    MAX = 1024

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Client, datetime]] = {}
        # Within one shared transaction, each application is read once however many tokens it gets.
        self._seen: WeakKeyDictionary[Transaction, dict[str, Client | None]] = WeakKeyDictionary()

    def get(self, client_id: str, now: datetime) -> Client | None:
        entry = self._entries.get(client_id)
        if entry is None or now - entry[1] >= self.TTL:
            return None
        return entry[0]

    def put(self, client: Client, now: datetime) -> None:
        if len(self._entries) >= self.MAX:
            self._entries.pop(next(iter(self._entries)))
        self._entries[client.client_id] = (client, now)

    def drop(self, client_id: str) -> None:
        self._entries.pop(client_id, None)

    async def current(self, tx: Transaction, client_id: str) -> Client | None:
        seen = self._seen.setdefault(tx, {})
        if client_id not in seen:
            seen[client_id] = await tx.clients.get(client_id)
        return seen[client_id]


class TokenEndpoint:
    def __init__(self, deps: Deps, issuer: str, keys: KeyRing) -> None:
        self._deps = deps
        self._issuer = issuer
        self._keys = keys
        self.server = PortalServer(issuer, self._mint)
        self.commits = GroupCommit(deps.store, finish=_finish)
        self.clients = ClientCache()

    async def handle(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        form = dict(items)
        try:
            client_id = check_shape(items, authorization)
            if not form.get("grant_type"):
                raise oauth_errors.InvalidRequestError("grant_type is required")
        except oauth_errors.OAuth2Error as exc:
            await audit_refusal(self._deps, new_state(self._deps, self._issuer), "token", exc, form, ctx)
            return refusal(exc)
        # First on the application as last seen (no read of its own); a refusal, or an application
        # changed since, is decided again on a fresh read, so the cache never refuses or allows alone.
        for cached in (True, False):
            # A new request each time: Authlib writes what it found (client, user, code) onto it.
            request = PortalRequest("POST", self.server.base + TOKEN_PATH, items, authorization)
            state = new_state(self._deps, self._issuer)
            state.grant_type = form.get("grant_type", "")
            await self._read(state, client_id, form, cached=cached)
            answer: Answer = decide(state, partial(self.server.create_token_response, request))
            if state.refused is not None:
                if state.client_cached:
                    continue
                if state.reused is not None and state.client is not None:
                    await self._reused(state, ctx)
                await audit_refusal(self._deps, state, "token", state.refused, form, ctx)
                return TokenResponse(answer.status, answer.body, answer.headers)
            written = await self._write(state, ctx)
            if written == "stale":
                assert client_id is not None
                self.clients.drop(client_id)
                continue
            if written == "ended":
                ended = oauth_errors.InvalidGrantError(
                    "the sign-in behind this code has ended"
                    if state.spend == "code"
                    else "the refresh token is not valid"
                )
                await audit_refusal(self._deps, state, "token", ended, form, ctx)
                return refusal(ended)
            if written == "lost":
                await self._reused(state, ctx)
                lost = oauth_errors.InvalidGrantError(
                    "the code is not valid" if state.spend == "code" else "the refresh token is not valid"
                )
                await audit_refusal(self._deps, state, "token", lost, form, ctx)
                return refusal(lost)
            return TokenResponse(answer.status, answer.body, answer.headers)
        raise AssertionError("a fresh read is never stale")

    async def _read(self, state: Loaded, client_id: str | None, form: Mapping[str, str], *, cached: bool) -> None:
        """Everything Authlib may ask about: the client, and the code or refresh token with the user,
        agency and session behind it. Hashes only; what is not found is simply not there."""
        if not client_id or not CLIENT_ID_FORMAT.fullmatch(client_id):
            return
        code = form.get("code", "") if state.grant_type == "authorization_code" else ""
        presented = form.get("refresh_token", "") if state.grant_type == "refresh_token" else ""
        state.client = self.clients.get(client_id, state.now) if cached else None
        state.client_cached = state.client is not None
        if state.client_cached and not code and not presented:
            if state.grant_type in GRANT_TYPES:
                state.signer = await self._keys.signer()
            return
        async with self._deps.store.read() as tx:
            if state.client is None:
                state.client = await tx.clients.get(client_id)
                if state.client is None:
                    return
                self.clients.put(state.client, state.now)
            user_id: str | None = None
            if code and len(code) <= 128:
                state.code = await tx.codes.get(secret_hash(code))
                if state.code is not None and state.code.client_id == client_id:
                    user_id = state.code.user_id
                    state.session = await tx.sessions.get(state.code.session_hash)
            elif presented and len(presented) <= 128:
                grant = await tx.tokens.refresh_grant(secret_hash(presented))
                if grant is not None and grant[0].client_id == client_id:
                    state.refresh, state.user, state.agency = grant
            if user_id:
                found = await tx.users.get_with_agency(user_id)
                state.user, state.agency = found if found else (None, None)
        session = state.session
        state.session_live = (
            session is not None and session.ended_at is None and not session.expiry_reason(state.now, self._deps.policy)
        )
        if state.grant_type in GRANT_TYPES:
            state.signer = await self._keys.signer()

    # -- minting: Authlib's token generator --------------------------------------------------------
    def _mint(
        self,
        grant_type: str,
        client: OAuthClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, object]:
        """The token Authlib's grant asked for, written down in `Loaded.issued` for the transaction."""
        state = loaded()
        app = client.client
        now = state.now
        requested = list(dict.fromkeys((scope or "").split()))
        code, previous = state.code, state.refresh
        family_id = uuid.uuid4().hex
        refresh_expires: datetime | None = None
        auth_time: datetime | None = None
        acr: str | None = None
        amr: tuple[str, ...] = ()
        session_hash: str | None = None
        code_hash: str | None = None
        if grant_type == "authorization_code" and code is not None:
            auth_time, acr, amr, session_hash, code_hash = (
                code.auth_time,
                code.acr,
                code.amr,
                code.session_hash,
                code.code_hash,
            )
            if "offline_access" in requested:
                refresh_expires = now + timedelta(seconds=app.refresh_token_seconds)
        elif grant_type == "refresh_token" and previous is not None:
            # Only what was granted, was asked for now, and the application is still allowed (an
            # administrator may have narrowed it since the sign-in).
            granted = previous.scope.split()
            requested = [s for s in granted if s in requested and s in app.scopes]
            family_id = previous.family_id
            auth_time, acr, amr, session_hash = previous.auth_time, previous.acr, previous.amr, previous.session_hash
            # The family's lifetime is fixed at the sign-in: rotation never extends it. A refresh that
            # drops offline_access ends the family: no new refresh token comes with it.
            if "offline_access" in requested:
                refresh_expires = previous.refresh_expires_at
        scope_text = " ".join(requested)
        token_id = uuid.uuid4().hex
        expires = now + timedelta(seconds=app.access_token_seconds)
        if app.access_token_format is TokenFormat.JWT:
            access = self._access_jwt(state, app, user, scope_text, token_id, expires, (auth_time, acr, amr))
        else:
            access = new_secret()
        refresh = new_secret() if refresh_expires is not None and include_refresh_token else None
        state.issued = IssuedToken(
            id=token_id,
            family_id=family_id,
            client_id=app.client_id,
            scope=scope_text,
            issued_at=now,
            access_expires_at=expires,
            access_hash=secret_hash(access),
            user_id=user.id if user is not None else None,
            refresh_hash=secret_hash(refresh) if refresh else None,
            refresh_expires_at=refresh_expires if refresh else None,
            code_hash=code_hash,
            session_hash=session_hash,
            auth_time=auth_time,
            amr=amr,
            acr=acr,
        )
        body: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": app.access_token_seconds,
        }
        if scope_text:
            body["scope"] = scope_text
        if refresh:
            body["refresh_token"] = refresh
        return body

    def _access_jwt(
        self,
        state: Loaded,
        client: Client,
        user: Any,
        scope: str,
        token_id: str,
        expires: datetime,
        sign_in: tuple[datetime | None, str | None, tuple[str, ...]],
    ) -> str:
        """An RFC 9068 access token; only its SHA-256 is stored, so it is revocable like an opaque one."""
        signer = state.signer
        assert signer is not None
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": user.id if user is not None else client.client_id,
            "aud": client.client_id,
            "client_id": client.client_id,
            "iat": epoch(state.now),
            "exp": epoch(expires),
            "jti": token_id,
        }
        if scope:
            claims["scope"] = scope
        auth_time, acr, amr = sign_in
        if user is not None and auth_time is not None:
            claims.update(auth_time=epoch(auth_time), acr=acr, amr=list(amr))
        header = {"alg": signer.alg, "kid": signer.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, signer.key, algorithms=[signer.alg])

    # -- writing what Authlib decided --------------------------------------------------------------
    async def _write(self, state: Loaded, ctx: RequestContext) -> Literal["written", "lost", "stale", "ended"]:
        """Spend what the grant consumed and store what it issued, in one transaction; False when the
        spend lost, i.e. this was a second use at the same moment. A lost spend writes nothing, so it
        leaves the rest of a shared transaction alone."""
        token = state.issued
        assert token is not None
        assert state.client is not None
        kind, grant_type = EventType.TOKEN_ISSUED, "client_credentials"
        if state.spend == "refresh":
            kind, grant_type = EventType.TOKEN_REFRESHED, "refresh_token"
        elif state.spend == "code":
            grant_type = "authorization_code"
        event = self._issued(kind, grant_type, state, token)

        decided_on = state.client if state.client_cached else None
        policy = self._deps.policy

        async def work(tx: Transaction) -> _Write:
            if decided_on is not None and await self.clients.current(tx, decided_on.client_id) != decided_on:
                # Disabled, re-keyed or changed since it was cached: nothing is written, decide again.
                return _Write("stale")
            if state.spend == "code":
                assert state.code is not None
                # Locked, so a sign-out either finishes first (and is seen here) or waits for this
                # commit (and then revokes this token with the session's others).
                session = await tx.sessions.get(state.code.session_hash, for_update=True)
                if session is None or session.ended_at is not None or session.expiry_reason(state.now, policy):
                    return _Write("ended")
                if not await tx.codes.spend(state.code.code_hash, state.now):
                    return _Write("lost")
            elif state.spend == "refresh":
                assert state.refresh is not None
                if not await tx.tokens.mark_refreshed(state.refresh.id, state.now):
                    # Spent is a second use; revoked meanwhile (sign-out, revocation) is only refused.
                    now_stored = await tx.tokens.by_access_hash(state.refresh.access_hash)
                    spent = now_stored is None or now_stored.refreshed_at is not None
                    return _Write("lost" if spent else "ended")
            # The token and its event are written by _finish, with the rest of the batch's.
            return _Write("written", token, event, ctx)

        # Shared with the other tokens being written at this moment: one head lock, one durable commit.
        return (await self.commits.run(work)).outcome

    async def _reused(self, state: Loaded, ctx: RequestContext) -> None:
        """Something single-use came back: revoke what its first use produced, and record it.

        A second use of a code is refused and its tokens revoked (RFC 6749 4.1.2); a spent refresh token
        coming back means one of its holders is not the client, so the whole family ends."""
        assert state.client is not None
        now = self._deps.clock.now()
        revoke: Callable[[Transaction], Awaitable[int]]
        user_id: str | None
        if state.code is not None and (state.reused == "code" or state.spend == "code"):
            code_hash, user_id = state.code.code_hash, state.code.user_id
            revoke = lambda tx: tx.tokens.revoke_for_code(code_hash, now)  # noqa: E731
            kind, reason, details = EventType.TOKEN_REVOKED, "code_reused", {}
        else:
            assert state.refresh is not None
            family_id, user_id = state.refresh.family_id, state.refresh.user_id
            revoke = lambda tx: tx.tokens.revoke_family(family_id, now)  # noqa: E731
            kind, reason = EventType.REFRESH_TOKEN_REUSE_DETECTED, "refresh_token_reused"
            details = {"family_id": family_id}
        async with self._deps.store.transaction() as tx:
            revoked = await revoke(tx)
            user = await tx.users.get(user_id) if user_id else None
            await tx.audit.append(
                client_event(
                    kind,
                    Outcome.FAILURE,
                    reason,
                    state.client,
                    user=user,
                    domain=self._deps.domain,
                    details={**details, "revoked": revoked},
                ),
                ctx,
            )

    def _issued(self, kind: EventType, grant_type: str, state: Loaded, token: IssuedToken) -> AuditEvent:
        assert state.client is not None
        return client_event(
            kind,
            Outcome.SUCCESS,
            grant_type,
            state.client,
            user=state.user if token.user_id else None,
            domain=self._deps.domain,
            details={
                "token_id": token.id,
                "family_id": token.family_id,
                "scope": token.scope,
                "refresh_token": token.refresh_hash is not None,
                "access_token_format": str(state.client.access_token_format),
            },
        )
