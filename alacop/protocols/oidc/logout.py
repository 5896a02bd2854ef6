"""Signing out of applications: RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.

`EndSession` checks an end-session request: the `id_token_hint` must be an ID token this portal
signed (an expired one is accepted, as the spec allows, since logging out is what it is for), the
`client_id` must match it, and the browser is sent back only to a `post_logout_redirect_uri`
registered exactly for that client. Anything else shows the portal's own page, never a redirect.

`BackChannel` tells every application that was issued tokens for an ended portal session, by a
signed `logout_token` POSTed to its registered `backchannel_logout_uri`. Delivery happens after the
sign-out has committed, in tasks that never hold up the sign-out; each outcome is audited as
`LogoutPropagated`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from alacop.core.accounts import User
from alacop.core.audit import EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.oidc import CLIENT_ID_FORMAT, Client
from alacop.core.session_manager import Ended
from alacop.protocols.oidc._util import client_event, epoch, session_sid, with_params
from alacop.protocols.oidc.keys import ALGORITHMS, KeyRing

log = logging.getLogger("alacop")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_SECONDS = 120
DELIVERY_TIMEOUT = 5.0
# A failed delivery (no answer, a 5xx or a 429) is tried again after these pauses, then given up and
# audited; a 4xx other than 429 or a redirect is the application's answer and is not retried.
RETRY_DELAYS = (2.0, 10.0)
_LIMITS = {"id_token_hint": 8192, "client_id": 64, "post_logout_redirect_uri": 2000, "state": 1024}
_SINGLE = tuple(_LIMITS)


@dataclass(frozen=True, slots=True)
class Hint:
    """What a verified id_token_hint says: whose sign-in, for which application, which portal session."""

    sub: str
    client_id: str
    sid: str | None


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    """An end-session request once checked. `location` is set only when a redirect is allowed."""

    params: dict[str, str]
    client: Client | None
    hint: Hint | None
    hint_invalid: bool
    location: str | None
    refused: str = ""


class EndSession:
    def __init__(self, deps: Deps, issuer: str, keys: KeyRing) -> None:
        self._deps = deps
        self._issuer = issuer
        self._keys = keys

    async def check(self, items: Sequence[tuple[str, str]], ctx: RequestContext) -> LogoutRequest:
        names = [name for name, _ in items]
        params = {k: v for k, v in items if k in _SINGLE}
        refused = ""
        if any(names.count(n) > 1 for n in _SINGLE):
            refused = "repeated_parameter"
        elif any(len(params.get(n, "")) > limit for n, limit in _LIMITS.items()):
            refused = "parameter_too_long"
        hint: Hint | None = None
        hint_invalid = False
        if not refused and params.get("id_token_hint"):
            hint = await self._hint(params["id_token_hint"])
            hint_invalid = hint is None
            if hint_invalid:
                refused = "id_token_hint_invalid"
        client_id = params.get("client_id") or (hint.client_id if hint else "")
        if not refused and hint is not None and params.get("client_id") and params["client_id"] != hint.client_id:
            # OpenID RP-Initiated Logout 1.0 2: the client_id must be the one the ID token was issued to.
            refused = "client_id_mismatch"
        client: Client | None = None
        if client_id and not refused and CLIENT_ID_FORMAT.fullmatch(client_id):
            async with self._deps.store.read() as tx:
                client = await tx.clients.get(client_id)
        location: str | None = None
        target = params.get("post_logout_redirect_uri", "")
        if target and not refused:
            if client is None or not client.active:
                refused = "client_unknown"
            elif target not in client.post_logout_redirect_uris:
                refused = "post_logout_redirect_uri_unregistered"
            else:
                state = params.get("state")
                location = with_params(target, [("state", state)]) if state else target
        if refused:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    client_event(
                        EventType.AUTHORIZATION_REFUSED,
                        Outcome.FAILURE,
                        refused,
                        client,
                        client_id=client_id,
                        details={"endpoint": "end_session", "post_logout_redirect_uri": target[:200]},
                    ),
                    ctx,
                )
        return LogoutRequest(params, client, hint, hint_invalid, location, refused)

    async def _hint(self, value: str) -> Hint | None:
        """An ID token this portal signed, whatever its age; None for anything else."""
        try:
            keys = KeySet.import_key_set(await self._keys.jwks())  # type: ignore[arg-type]
            decoded = jwt.decode(value, keys, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError, TypeError, KeyError):
            return None
        claims = decoded.claims
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        sub = claims.get("sub")
        sid = claims.get("sid")
        if (
            decoded.header.get("typ") != "JWT"  # not an access token (at+jwt) or a logout token
            or claims.get("iss") != self._issuer
            or not isinstance(sub, str)
            or len(audiences) != 1
            or not isinstance(audiences[0], str)
            or (sid is not None and not isinstance(sid, str))
        ):
            return None
        return Hint(sub=sub, client_id=audiences[0], sid=sid)

    async def session_for(self, hint: Hint) -> str | None:
        """The live portal session a hint's `sid` names, found among its user's sessions."""
        if hint.sid is None:
            return None
        async with self._deps.store.read() as tx:
            sessions = await tx.sessions.active_for_user(hint.sub)
        for session in sessions:
            if session.ended_at is None and session_sid(self._deps.pepper, session.id_hash) == hint.sid:
                return session.id_hash
        return None


class BackChannel:
    """Logout tokens to the applications of an ended session, sent in tasks the sign-out never waits for."""

    def __init__(self, deps: Deps, issuer: str, keys: KeyRing) -> None:
        self._deps = deps
        self._issuer = issuer
        self._keys = keys
        self._tasks: set[asyncio.Task[None]] = set()
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS

    async def propagate(self, ended: Ended, ctx: RequestContext) -> int:
        """Start one delivery per application with a back-channel URI; returns how many were started."""
        user = ended.user
        client_ids = sorted({t.client_id for t in ended.revoked})
        if user is None or not client_ids:
            return 0
        async with self._deps.store.read() as tx:
            clients = [await tx.clients.get(cid) for cid in client_ids]
        sid = session_sid(self._deps.pepper, ended.session.id_hash)
        started = 0
        for client in clients:
            # A disabled application is told too: ending its users' sessions can only help.
            if client is None or not client.backchannel_logout_uri:
                continue
            token = await self.logout_token(client, user.id, sid)
            task = asyncio.create_task(self._deliver(client, client.backchannel_logout_uri, token, user, ctx))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def sweep(self, ctx: RequestContext, limit: int = 100) -> int:
        """Tell applications of the sessions ended in bulk (a disable, a lock, a reset) since the last sweep.

        Those ends happen in core services that know nothing of HTTP; they leave a notice on the revoked
        tokens instead, and every instance sweeps. Each notice is claimed by one conditional update, so
        only one instance sends it; delivery is awaited here (this runs in the background, not in a
        request) and audited like a sign-out's. Returns how many logout tokens were sent.
        """
        async with self._deps.store.read() as tx:
            pending = list(await tx.tokens.pending_logouts(limit))
        deliveries = []
        for client_id, user_id, session_hash in pending:
            async with self._deps.store.transaction() as tx:
                if not await tx.tokens.claim_logout(client_id, session_hash):
                    continue
                client = await tx.clients.get(client_id)
                user = await tx.users.get(user_id)
            if client is None or user is None or not client.backchannel_logout_uri:
                continue
            try:
                token = await self.logout_token(client, user.id, session_sid(self._deps.pepper, session_hash))
            except Exception:  # one notice that cannot be signed must not strand the ones already claimed
                log.exception("could not make a logout token for %s", client_id)
                continue
            deliveries.append(self._deliver(client, client.backchannel_logout_uri, token, user, ctx))
        # Side by side, so one application that is down (and retried) does not hold up the others.
        await asyncio.gather(*deliveries)
        return len(deliveries)

    async def logout_token(self, client: Client, sub: str, sid: str) -> str:
        """Back-Channel Logout 1.0 2.4: iss, aud, iat, exp, jti, sub, sid, events; never a nonce."""
        signer = await self._keys.signer()
        now = self._deps.clock.now()
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": client.client_id,
            "iat": epoch(now),
            "exp": epoch(now + timedelta(seconds=LOGOUT_TOKEN_SECONDS)),
            "jti": uuid.uuid4().hex,
            "sub": sub,
            "sid": sid,
            "events": {BACKCHANNEL_EVENT: {}},
        }
        header = {"alg": signer.alg, "kid": signer.kid, "typ": "logout+jwt"}
        return jwt.encode(header, claims, signer.key, algorithms=[signer.alg])

    async def _attempt(self, client: Client, uri: str, token: str, details: dict[str, object]) -> tuple[Outcome, str]:
        try:
            async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, follow_redirects=False) as http:
                response = await http.post(uri, data={"logout_token": token})
            details["status"] = response.status_code
            details.pop("error", None)
            # 2.8: 200 (or 204) means done; anything else, including a redirect, is a failure.
            if response.status_code in (200, 204):
                return Outcome.SUCCESS, "delivered"
            return Outcome.FAILURE, "refused"
        except httpx.HTTPError as exc:
            details.pop("status", None)
            details["error"] = type(exc).__name__
            return Outcome.FAILURE, "unreachable"
        except Exception as exc:  # a bad address must not end in an unobserved task error
            log.exception("back-channel logout to %s failed", client.client_id)
            details["error"] = type(exc).__name__
            return Outcome.FAILURE, "error"

    async def _deliver(self, client: Client, uri: str, token: str, user: User, ctx: RequestContext) -> None:
        details: dict[str, object] = {"backchannel_logout_uri": uri[:200]}
        outcome, reason = await self._attempt(client, uri, token, details)
        attempts = 1
        for delay in self.retry_delays:
            status = details.get("status")
            transient = reason == "unreachable" or (isinstance(status, int) and (status >= 500 or status == 429))
            if outcome is Outcome.SUCCESS or not transient:
                break
            await asyncio.sleep(delay)
            outcome, reason = await self._attempt(client, uri, token, details)
            attempts += 1
        details["attempts"] = attempts
        try:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    client_event(
                        EventType.LOGOUT_PROPAGATED,
                        outcome,
                        reason,
                        client,
                        user=user,
                        domain=self._deps.domain,
                        details=details,
                    ),
                    ctx,
                )
        except Exception:
            log.exception("could not audit a back-channel logout to %s", client.client_id)

    async def drain(self, seconds: float = DELIVERY_TIMEOUT * (1 + len(RETRY_DELAYS)) + sum(RETRY_DELAYS)) -> None:
        """Wait for the deliveries in flight (tests, and shutdown before cancelling the rest)."""
        pending = set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=seconds)

    async def close(self) -> None:
        await self.drain(seconds=1.0)
        for task in list(self._tasks):
            task.cancel()
