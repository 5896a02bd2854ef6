"""The authorization endpoint (RFC 6749 4.1, RFC 7636, OpenID Connect Core 3.1.2): code flow only.

Until the client and its exact redirect URI are known, a bad request is refused on the portal's own
error page and never redirected (no open redirect); after that, errors go back to the client with
its `state`. Every session here is AAL2 (password and a second factor, CJIS IA-2(1)/(2)), which is
what an application's `require_aal2` asks for; the check below still says so in code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import AccessDeniedError, OAuth2Error

from alacop.core.audit import EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import AlacopError
from alacop.core.oidc import CLIENT_ID_FORMAT, Client
from alacop.core.ports import MAX_RETURN_TO
from alacop.core.session_manager import Current
from alacop.protocols.oidc._util import INVALID_REQUEST, INVALID_SCOPE, client_event, with_params
from alacop.protocols.oidc.server import PortalRequest, PortalServer, decide
from alacop.protocols.oidc.tokens import new_state

AUTHORIZE_PATH = "/oauth/authorize"
_SINGLE = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "prompt", "max_age")
_LIMITS = {"state": 1024, "nonce": 512, "login_hint": 254, "scope": 512, "acr_values": 256}
PROMPTS = ("none", "login")
ACR_VALUES = ("aal2",)


class AuthorizationRefused(AlacopError):
    """Shown on the portal: the client or its redirect URI is not registered (or the client is disabled)."""

    code = "authorization_refused"
    status = 400


@dataclass(frozen=True, slots=True)
class Redirect:
    """Back to the application, with a code or an error."""

    location: str


@dataclass(frozen=True, slots=True)
class SignIn:
    """To the sign-in page first, then back to `return_to` (this request, minus what forced the sign-in)."""

    return_to: str
    client_name: str
    login_hint: str | None


class _ClientError(Exception):
    def __init__(self, error: str, description: str, location: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        # Authlib's redirect for this error, when Authlib made it (with `state` and `iss`).
        self.location = location


class AuthorizationEndpoint:
    def __init__(self, deps: Deps, issuer: str, server: PortalServer) -> None:
        self._deps = deps
        self._issuer = issuer
        self._server = server

    async def handle(
        self, items: Sequence[tuple[str, str]], who: Current | None, ctx: RequestContext
    ) -> Redirect | SignIn:
        params = dict(items)
        client, redirect_uri = await self._client(items, params, ctx)
        state = params.get("state", "")[: _LIMITS["state"]]
        try:
            return await self._authorize(client, redirect_uri, items, params, who, ctx)
        except _ClientError as exc:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    client_event(
                        EventType.AUTHORIZATION_REFUSED,
                        Outcome.FAILURE,
                        exc.error,
                        client,
                        user=who.user if who else None,
                        domain=self._deps.domain,
                        details={"description": exc.description},
                    ),
                    ctx,
                )
            if exc.location:
                return Redirect(exc.location)
            error = [("error", exc.error), ("error_description", exc.description)]
            if state:
                error.append(("state", state))
            error.append(("iss", self._issuer))
            return Redirect(with_params(redirect_uri, error))

    async def _client(
        self, items: Sequence[tuple[str, str]], params: dict[str, str], ctx: RequestContext
    ) -> tuple[Client, str]:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        client: Client | None = None
        reason = ""
        names = [name for name, _ in items]
        if names.count("client_id") > 1 or names.count("redirect_uri") > 1:
            reason = "repeated_parameter"
        elif not client_id:
            reason = "client_id_missing"
        elif not CLIENT_ID_FORMAT.fullmatch(client_id):
            reason = "client_unknown"
        else:
            async with self._deps.store.read() as tx:
                client = await tx.clients.get(client_id)
            if client is None:
                reason = "client_unknown"
            elif not client.active:
                reason = "client_disabled"
            elif not redirect_uri:
                # OpenID Connect requires it; with it every response goes to an address checked here.
                reason = "redirect_uri_missing"
            elif redirect_uri not in client.redirect_uris:
                reason = "redirect_uri_unregistered"
        if reason:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    client_event(
                        EventType.AUTHORIZATION_REFUSED,
                        Outcome.FAILURE,
                        reason,
                        client,
                        client_id=client_id,
                        details={"redirect_uri": redirect_uri[:200]},
                    ),
                    ctx,
                )
            refused = AuthorizationRefused(reason)
            refused.audited = True
            raise refused
        assert client is not None
        return client, redirect_uri

    async def _authorize(
        self,
        client: Client,
        redirect_uri: str,
        items: Sequence[tuple[str, str]],
        params: dict[str, str],
        who: Current | None,
        ctx: RequestContext,
    ) -> Redirect | SignIn:
        # What Authlib leaves to the server: limits, the parameters the portal does not support, and the
        # prompt and max_age values it does not read.
        names = [name for name, _ in items]
        if any(names.count(name) > 1 for name in _SINGLE):
            raise _ClientError(INVALID_REQUEST, "a parameter was repeated")
        for name, limit in _LIMITS.items():
            if len(params.get(name, "")) > limit:
                raise _ClientError(INVALID_REQUEST, f"{name} is too long")
        if "request" in params:
            raise _ClientError("request_not_supported", "request objects are not supported")
        if "request_uri" in params:
            raise _ClientError("request_uri_not_supported", "request_uri is not supported")
        if not params.get("response_type"):
            raise _ClientError(INVALID_REQUEST, "response_type is required")
        if params.get("response_mode", "query") != "query":
            raise _ClientError(INVALID_REQUEST, "only response_mode=query is supported")
        if "openid" not in params.get("scope", "").split():
            raise _ClientError(INVALID_SCOPE, "the openid scope is required")
        prompt = params.get("prompt", "").split()
        if any(p not in PROMPTS for p in prompt):
            raise _ClientError(INVALID_REQUEST, "prompt is none or login")
        max_age: int | None = None
        if "max_age" in params:
            raw = params["max_age"]
            if not raw.isdigit() or len(raw) > 9:
                raise _ClientError(INVALID_REQUEST, "max_age is a number of seconds")
            max_age = int(raw)

        state = new_state(self._deps, self._issuer)
        state.client = client
        fresh = who is not None and (max_age is None or state.now - who.session.auth_time <= timedelta(seconds=max_age))
        # Every portal session is AAL2 today; should a weaker one ever exist, it signs in again here.
        strong_enough = who is not None and (not client.require_aal2 or who.session.aal == "aal2")
        signed_in = who is not None and "login" not in prompt and fresh and strong_enough
        if who is not None:
            state.user, state.session = who.user, who.session
        request = PortalRequest("GET", self._server.base + AUTHORIZE_PATH, items, None)
        end_user = who.user if signed_in and who is not None else None
        try:
            # Authlib's code grant: response_type, redirect_uri, scope, PKCE (S256Only), nonce, prompt.
            grant = decide(state, lambda: self._server.get_consent_grant(request, end_user))
            if grant.prompt == "login" or who is None:
                # Back here after the sign-in, without what asked for it, so the new session satisfies it.
                kept = [(k, v) for k, v in items if k not in ("prompt", "max_age")]
                return_to = f"{AUTHORIZE_PATH}?{urlencode(kept)}"
                if len(return_to) > MAX_RETURN_TO:
                    raise _ClientError(INVALID_REQUEST, "the authorization request is too long")
                return SignIn(return_to=return_to, client_name=client.name, login_hint=params.get("login_hint") or None)
            user = who.user
            if not user.active:
                raise AccessDeniedError("the account is not active", redirect_uri=redirect_uri)
            if not client.allows_agency(user.agency_id):
                raise AccessDeniedError(
                    "this application is not available to the user's agency", redirect_uri=redirect_uri
                )
            answer = decide(state, lambda: self._server.create_authorization_response(request, user, grant))
        except OAuth2Error as exc:
            error = exc
            error.state = params.get("state")
            error.redirect_uri = redirect_uri
            answer = decide(state, lambda: self._server.redirect_error(request, error))
        if state.refused is not None or state.new_code is None:
            refused = state.refused
            raise _ClientError(
                (refused.error if refused else None) or INVALID_REQUEST,
                (refused.description if refused else None) or "",
                answer.location,
            )
        record = state.new_code
        async with self._deps.store.transaction() as tx:
            await tx.codes.add(record)
            await tx.audit.append(
                client_event(
                    EventType.AUTHORIZATION_GRANTED,
                    Outcome.SUCCESS,
                    "code_issued",
                    client,
                    user=who.user if who else None,
                    domain=self._deps.domain,
                    details={
                        "scope": record.scope,
                        "redirect_uri": redirect_uri,
                        "pkce": record.code_challenge is not None,
                    },
                ),
                ctx,
            )
        assert answer.location is not None
        return Redirect(answer.location)
