"""The token endpoint (RFC 6749 3.2, 4.1.3, 4.4, 6; RFC 7636 4.6; OpenID Connect Core 3.1.3).

Each grant checks everything first, signs outside the transaction, then in one transaction spends
what it consumes (the code, or the refresh token) conditionally, stores the new token's hashes and
appends the audit event. Losing the conditional spend means the same code or refresh token was used
twice: everything it produced is revoked and the reuse is audited.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from joserfc import jwt

from alacop.core.accounts import Agency, User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.oidc import AuthorizationCode, Client, IssuedToken, TokenFormat
from alacop.core.ports import Transaction
from alacop.protocols.oidc._util import (
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TARGET,
    NO_STORE,
    UNAUTHORIZED_CLIENT,
    UNSUPPORTED_GRANT_TYPE,
    Headers,
    OAuthError,
    client_event,
    epoch,
    half_hash,
    new_secret,
    secret_hash,
    session_sid,
)
from alacop.protocols.oidc.claims import user_claims
from alacop.protocols.oidc.clientauth import authenticate
from alacop.protocols.oidc.keys import KeyRing

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
ID_TOKEN_SECONDS = 300
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
# Scopes about a user; a client acting for itself (client_credentials) is granted none of them.
USER_SCOPES = frozenset({"openid", "profile", "email", "agency", "roles", "offline_access"})


@dataclass(frozen=True, slots=True)
class TokenResponse:
    status: int
    body: dict[str, object]
    headers: Headers


@dataclass(frozen=True, slots=True)
class _Grant:
    """What a new token is about: who, for which client, how they signed in."""

    client: Client
    scope: str
    family_id: str
    user: User | None = None
    agency: Agency | None = None
    auth_time: datetime | None = None
    acr: str | None = None
    amr: tuple[str, ...] = ()
    session_hash: str | None = None
    code_hash: str | None = None
    nonce: str | None = None
    refresh_expires_at: datetime | None = None


class TokenEndpoint:
    def __init__(self, deps: Deps, issuer: str, keys: KeyRing) -> None:
        self._deps = deps
        self._issuer = issuer
        self._keys = keys

    async def handle(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        client: Client | None = None
        form = dict(items)
        try:
            names = [name for name, _ in items]
            if any(names.count(n) > 1 for n in set(names)):
                raise OAuthError(INVALID_REQUEST, "a parameter was repeated")
            client = await authenticate(self._deps, form, authorization)
            grant_type = form.get("grant_type", "")
            if grant_type == "authorization_code":
                return await self._authorization_code(client, form, ctx)
            if grant_type == "refresh_token":
                return await self._refresh_token(client, form, ctx)
            if grant_type == "client_credentials":
                return await self._client_credentials(client, form, ctx)
            if not grant_type:
                raise OAuthError(INVALID_REQUEST, "grant_type is required")
            raise OAuthError(UNSUPPORTED_GRANT_TYPE, "grant_type is not supported")
        except OAuthError as exc:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    client_event(
                        EventType.AUTHORIZATION_REFUSED,
                        Outcome.FAILURE,
                        exc.error,
                        client,
                        client_id=form.get("client_id"),
                        details={
                            "endpoint": "token",
                            "grant_type": form.get("grant_type", "")[:40],
                            "description": exc.description,
                        },
                    ),
                    ctx,
                )
            return TokenResponse(exc.status, dict(exc.body()), [*NO_STORE, *exc.headers])

    # -- authorization_code ----------------------------------------------------------------------
    async def _authorization_code(self, client: Client, form: Mapping[str, str], ctx: RequestContext) -> TokenResponse:
        code = form.get("code", "")
        if not code:
            raise OAuthError(INVALID_REQUEST, "code is required")
        now = self._deps.clock.now()
        async with self._deps.store.read() as tx:
            record = await tx.codes.get(secret_hash(code)) if len(code) <= 128 else None
        if record is None or record.client_id != client.client_id:
            raise OAuthError(INVALID_GRANT, "the code is not valid")
        if record.used_at is not None:
            await self._code_reused(client, record, ctx)
            raise OAuthError(INVALID_GRANT, "the code is not valid")
        if now >= record.expires_at:
            raise OAuthError(INVALID_GRANT, "the code has expired")
        if form.get("redirect_uri") != record.redirect_uri:
            raise OAuthError(INVALID_GRANT, "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        if record.code_challenge is not None:
            if not verifier or not _VERIFIER.fullmatch(verifier) or not _s256_matches(verifier, record.code_challenge):
                raise OAuthError(INVALID_GRANT, "the code_verifier does not match")
        elif verifier is not None:
            # A verifier for a code issued without a challenge is a downgrade attempt (RFC 9700 2.1.1).
            raise OAuthError(INVALID_GRANT, "no code_challenge was sent for this code")
        elif client.public:
            raise OAuthError(INVALID_GRANT, "a public client must use PKCE")
        async with self._deps.store.read() as tx:
            user = await tx.users.get(record.user_id)
            agency = await tx.agencies.get(user.agency_id) if user else None
            session = await tx.sessions.get(record.session_hash)
        if user is None or not user.active or not client.allows_agency(user.agency_id):
            raise OAuthError(INVALID_GRANT, "the user may not use this application")
        if session is None or session.ended_at is not None or session.expiry_reason(now, self._deps.policy):
            # Ended, or past its idle or absolute limit (CJIS AC-11, IA-5 j): no tokens from a stale sign-in.
            raise OAuthError(INVALID_GRANT, "the sign-in behind this code has ended")
        scopes = record.scope.split()
        grant = _Grant(
            client=client,
            scope=record.scope,
            family_id=uuid.uuid4().hex,
            user=user,
            agency=agency,
            auth_time=record.auth_time,
            acr=record.acr,
            amr=record.amr,
            session_hash=record.session_hash,
            code_hash=record.code_hash,
            nonce=record.nonce,
            refresh_expires_at=(
                now + timedelta(seconds=client.refresh_token_seconds) if "offline_access" in scopes else None
            ),
        )
        token, body = await self._mint(grant, now)
        spent = await self._issue_once(
            lambda tx: tx.codes.spend(record.code_hash, now),
            token,
            self._issued(EventType.TOKEN_ISSUED, "authorization_code", grant, token),
            ctx,
        )
        if not spent:
            await self._code_reused(client, record, ctx)
            raise OAuthError(INVALID_GRANT, "the code is not valid")
        return TokenResponse(200, body, list(NO_STORE))

    async def _code_reused(self, client: Client, record: AuthorizationCode, ctx: RequestContext) -> None:
        """RFC 6749 4.1.2: a second use is refused, and what the first use produced is revoked."""
        await self._revoke_on_reuse(
            client,
            record.user_id,
            lambda tx, now: tx.tokens.revoke_for_code(record.code_hash, now),
            EventType.TOKEN_REVOKED,
            "code_reused",
            {},
            ctx,
        )

    # -- refresh_token ---------------------------------------------------------------------------
    async def _refresh_token(self, client: Client, form: Mapping[str, str], ctx: RequestContext) -> TokenResponse:
        presented = form.get("refresh_token", "")
        if not presented:
            raise OAuthError(INVALID_REQUEST, "refresh_token is required")
        now = self._deps.clock.now()
        async with self._deps.store.read() as tx:
            record = await tx.tokens.by_refresh_hash(secret_hash(presented)) if len(presented) <= 128 else None
        if record is None or record.client_id != client.client_id or record.revoked_at is not None:
            raise OAuthError(INVALID_GRANT, "the refresh token is not valid")
        if record.refreshed_at is not None:
            await self._refresh_reused(client, record, ctx)
            raise OAuthError(INVALID_GRANT, "the refresh token is not valid")
        if record.refresh_expires_at is None or now >= record.refresh_expires_at:
            raise OAuthError(INVALID_GRANT, "the refresh token has expired")
        granted = record.scope.split()
        requested = form.get("scope", "").split() or granted
        if any(s not in granted for s in requested):
            raise OAuthError(INVALID_SCOPE, "a refresh cannot widen the scope")
        async with self._deps.store.read() as tx:
            user = await tx.users.get(record.user_id) if record.user_id else None
            agency = await tx.agencies.get(user.agency_id) if user else None
        if user is None or not user.active or not client.allows_agency(user.agency_id):
            raise OAuthError(INVALID_GRANT, "the user may not use this application")
        # Only what was granted, was asked for now, and the application is still allowed (an administrator
        # may have narrowed it since the sign-in).
        scope = [s for s in granted if s in requested and s in client.scopes]
        grant = _Grant(
            client=client,
            scope=" ".join(scope),
            family_id=record.family_id,
            user=user,
            agency=agency,
            auth_time=record.auth_time,
            acr=record.acr,
            amr=record.amr,
            session_hash=record.session_hash,
            # The family's lifetime is fixed at the sign-in: rotation never extends it. A refresh that
            # drops offline_access ends the family: no new refresh token comes with it.
            refresh_expires_at=record.refresh_expires_at if "offline_access" in scope else None,
        )
        token, body = await self._mint(grant, now)
        rotated = await self._issue_once(
            lambda tx: tx.tokens.mark_refreshed(record.id, now),
            token,
            self._issued(EventType.TOKEN_REFRESHED, "refresh_token", grant, token),
            ctx,
        )
        if not rotated:
            await self._refresh_reused(client, record, ctx)
            raise OAuthError(INVALID_GRANT, "the refresh token is not valid")
        return TokenResponse(200, body, list(NO_STORE))

    async def _refresh_reused(self, client: Client, record: IssuedToken, ctx: RequestContext) -> None:
        """A spent refresh token came back: one of its holders is not the client, so the family ends."""
        await self._revoke_on_reuse(
            client,
            record.user_id,
            lambda tx, now: tx.tokens.revoke_family(record.family_id, now),
            EventType.REFRESH_TOKEN_REUSE_DETECTED,
            "refresh_token_reused",
            {"family_id": record.family_id},
            ctx,
        )

    async def _issue_once(
        self,
        spend: Callable[[Transaction], Awaitable[bool]],
        token: IssuedToken,
        issued: AuditEvent,
        ctx: RequestContext,
    ) -> bool:
        """Spend what the grant consumes (a code, a refresh token) and store what it issued, in one
        transaction; False when the spend lost, i.e. this was a second use."""
        async with self._deps.store.transaction() as tx:
            spent = await spend(tx)
            if spent:
                await tx.tokens.add(token)
                await tx.audit.append(issued, ctx)
        return spent

    async def _revoke_on_reuse(
        self,
        client: Client,
        user_id: str | None,
        revoke: Callable[[Transaction, datetime], Awaitable[int]],
        kind: EventType,
        reason: str,
        details: dict[str, object],
        ctx: RequestContext,
    ) -> None:
        """Something single-use came back: revoke what its first use produced, and record it."""
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            revoked = await revoke(tx, now)
            user = await tx.users.get(user_id) if user_id else None
            await tx.audit.append(
                client_event(
                    kind,
                    Outcome.FAILURE,
                    reason,
                    client,
                    user=user,
                    domain=self._deps.domain,
                    details={**details, "revoked": revoked},
                ),
                ctx,
            )

    # -- client_credentials ----------------------------------------------------------------------
    async def _client_credentials(self, client: Client, form: Mapping[str, str], ctx: RequestContext) -> TokenResponse:
        if client.public:
            raise OAuthError(UNAUTHORIZED_CLIENT, "a public client cannot use client_credentials")
        if "resource" in form:
            raise OAuthError(INVALID_TARGET, "no resource servers are defined")
        requested = form.get("scope", "").split()
        allowed = [s for s in client.scopes if s not in USER_SCOPES]
        if any(s not in allowed for s in requested):
            raise OAuthError(INVALID_SCOPE, "a requested scope is not allowed for this application")
        now = self._deps.clock.now()
        grant = _Grant(client=client, scope=" ".join(dict.fromkeys(requested)), family_id=uuid.uuid4().hex)
        token, body = await self._mint(grant, now)
        async with self._deps.store.transaction() as tx:
            await tx.tokens.add(token)
            await tx.audit.append(self._issued(EventType.TOKEN_ISSUED, "client_credentials", grant, token), ctx)
        return TokenResponse(200, body, list(NO_STORE))

    # -- minting ---------------------------------------------------------------------------------
    async def _mint(self, grant: _Grant, now: datetime) -> tuple[IssuedToken, dict[str, object]]:
        client = grant.client
        token_id = uuid.uuid4().hex
        expires = now + timedelta(seconds=client.access_token_seconds)
        scopes = grant.scope.split()
        if client.access_token_format is TokenFormat.JWT:
            access = await self._access_jwt(grant, token_id, now, expires)
        else:
            access = new_secret()
        refresh = new_secret() if grant.refresh_expires_at is not None else None
        token = IssuedToken(
            id=token_id,
            family_id=grant.family_id,
            client_id=client.client_id,
            scope=grant.scope,
            issued_at=now,
            access_expires_at=expires,
            access_hash=secret_hash(access),
            user_id=grant.user.id if grant.user else None,
            refresh_hash=secret_hash(refresh) if refresh else None,
            refresh_expires_at=grant.refresh_expires_at if refresh else None,
            code_hash=grant.code_hash,
            session_hash=grant.session_hash,
            auth_time=grant.auth_time,
            amr=grant.amr,
            acr=grant.acr,
        )
        body: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": client.access_token_seconds,
        }
        if grant.scope:
            body["scope"] = grant.scope
        if refresh:
            body["refresh_token"] = refresh
        if grant.user is not None and "openid" in scopes:
            body["id_token"] = await self._id_token(grant, access, now)
        return token, body

    async def _access_jwt(self, grant: _Grant, token_id: str, now: datetime, expires: datetime) -> str:
        """An RFC 9068 access token; only its SHA-256 is stored, so it is revocable like an opaque one."""
        signer = await self._keys.signer()
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": grant.user.id if grant.user else grant.client.client_id,
            "aud": grant.client.client_id,
            "client_id": grant.client.client_id,
            "iat": epoch(now),
            "exp": epoch(expires),
            "jti": token_id,
        }
        if grant.scope:
            claims["scope"] = grant.scope
        if grant.user is not None and grant.auth_time is not None:
            claims.update(auth_time=epoch(grant.auth_time), acr=grant.acr, amr=list(grant.amr))
        header = {"alg": signer.alg, "kid": signer.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, signer.key, algorithms=[signer.alg])

    async def _id_token(self, grant: _Grant, access_token: str, now: datetime) -> str:
        assert grant.user is not None
        assert grant.auth_time is not None
        signer = await self._keys.signer()
        claims = user_claims(grant.user, grant.agency, set(grant.scope.split()), self._deps.domain)
        claims.update(
            iss=self._issuer,
            aud=grant.client.client_id,
            iat=epoch(now),
            exp=epoch(now + timedelta(seconds=ID_TOKEN_SECONDS)),
            auth_time=epoch(grant.auth_time),
            acr=grant.acr,
            amr=list(grant.amr),
            at_hash=half_hash(access_token),
        )
        if grant.session_hash:
            # Back-Channel Logout 1.0 2.1: the portal session, so a logout token can name it.
            claims["sid"] = session_sid(self._deps.pepper, grant.session_hash)
        if grant.nonce:
            claims["nonce"] = grant.nonce
        header = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
        return jwt.encode(header, claims, signer.key, algorithms=[signer.alg])

    def _issued(self, kind: EventType, grant_type: str, grant: _Grant, token: IssuedToken) -> AuditEvent:
        return client_event(
            kind,
            Outcome.SUCCESS,
            grant_type,
            grant.client,
            user=grant.user,
            domain=self._deps.domain,
            details={
                "token_id": token.id,
                "family_id": token.family_id,
                "scope": token.scope,
                "refresh_token": token.refresh_hash is not None,
                "access_token_format": str(grant.client.access_token_format),
            },
        )


def _s256_matches(verifier: str, challenge: str) -> bool:
    matched: bool = compare_s256_code_challenge(verifier, challenge)
    return matched
