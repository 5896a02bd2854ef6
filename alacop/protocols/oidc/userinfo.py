"""The userinfo endpoint (OpenID Connect Core 5.3) on Authlib's `UserInfoEndpoint`, its bearer token
checked by Authlib's `ResourceProtector` and `BearerTokenValidator` (RFC 6750).

As at the token endpoint (server.py), the records the request names are read first (the token by the
SHA-256 of its value, its client, user and agency) and Authlib decides over them. The token may come
in the Authorization header or, for POST, the form body (RFC 6750 2.1, 2.2), never both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import ResourceProtector
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from authlib.oidc.core import UserInfoEndpoint

from alacop.core.deps import Deps
from alacop.protocols.oidc._util import INVALID_REQUEST, NO_STORE, Headers, OAuthError, secret_hash
from alacop.protocols.oidc.claims import user_claims
from alacop.protocols.oidc.server import Loaded, OAuthClient, PortalRequest, PortalServer, TokenModel, decide, loaded

REALM = "userinfo"
PATH = "/oauth/userinfo"


@dataclass(frozen=True, slots=True)
class UserinfoResponse:
    status: int
    body: dict[str, object]
    headers: Headers


def _challenge() -> Headers:
    return [("WWW-Authenticate", f'Bearer realm="{REALM}"')]


def bearer(authorization: str | None, form_token: str | None) -> str:
    """The access token from the header or, for POST, the form body (RFC 6750 2.1, 2.2); never both.
    No token at all is answered with a bare challenge (RFC 6750 3.1: no error code without credentials)."""
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


class _AccessToken(TokenModel):
    """What Authlib's UserInfoEndpoint asks of a token: its scope, client and user."""

    @property
    def scope(self) -> str:
        return self.record.scope

    def get_client(self) -> OAuthClient:
        state = loaded()
        assert state.client is not None
        return OAuthClient(state.client, state.pepper)

    def get_user(self) -> Any:
        return loaded().user


class _InsufficientScope(InsufficientScopeError):  # type: ignore[misc]
    def get_headers(self) -> list[tuple[str, str]]:
        # RFC 6750 3: the challenge names the error here too.
        headers: list[tuple[str, str]] = super().get_headers()
        return [*headers, ("WWW-Authenticate", f'Bearer realm="{REALM}", error="{self.error}"')]


class _Bearer(BearerTokenValidator):  # type: ignore[misc]
    def authenticate_token(self, token_string: str) -> _AccessToken | None:
        state = loaded()
        record = state.found
        if record is None or len(token_string) > 4096 or record.access_hash != secret_hash(token_string):
            return None
        return _AccessToken(record, "access_token", state.now)

    def validate_token(self, token: _AccessToken | None, scopes: list[str], request: PortalRequest) -> None:
        state = loaded()
        extra = {"realm": self.realm, "extra_attributes": self.extra_attributes}
        # A disabled application's tokens stop at once, whatever they say.
        if token is not None and (state.client is None or not state.client.active):
            raise InvalidTokenError(**extra)
        try:
            super().validate_token(token, scopes, request)
        except InsufficientScopeError as exc:
            raise _InsufficientScope("the token was not issued for OpenID Connect") from exc
        assert token is not None
        if token.record.user_id is None:
            raise _InsufficientScope("the token was not issued for OpenID Connect")
        user, client = state.user, state.client
        assert client is not None
        # The user's account, and the application's agency restriction, may have changed since.
        if user is None or not user.active or not client.allows_agency(user.agency_id):
            raise InvalidTokenError(**extra)


class _Protector(ResourceProtector):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.register_token_validator(_Bearer(realm=REALM))

    def acquire_token(self, scopes: str | list[str]) -> _AccessToken:
        # Authlib's validators take a list of alternatives; UserInfoEndpoint asks for "openid".
        wanted = [scopes] if isinstance(scopes, str) else scopes
        token: _AccessToken = self.validate_request(wanted, loaded().request)
        return token


class UserInfo(UserInfoEndpoint):  # type: ignore[misc]
    def generate_user_info(self, user: Any, scope: str) -> dict[str, object]:
        state = loaded()
        return user_claims(user, state.agency, set(scope.split()), state.domain)

    def get_issuer(self) -> str:
        return loaded().issuer


def register(server: PortalServer) -> None:
    server.register_endpoint(UserInfo(resource_protector=_Protector()))


async def userinfo(
    deps: Deps, server: PortalServer, authorization: str | None, form_token: str | None
) -> UserinfoResponse:
    try:
        token = bearer(authorization, form_token)
    except OAuthError as exc:
        body: dict[str, object] = dict(exc.body()) if exc.error else {}
        return UserinfoResponse(exc.status, body, [*NO_STORE, *exc.headers])
    state = Loaded(now=deps.clock.now(), issuer=server.issuer, pepper=deps.pepper, domain=deps.domain)
    if len(token) <= 4096:
        async with deps.store.read() as tx:
            state.found = await tx.tokens.by_access_hash(secret_hash(token))
            if state.found is not None:
                state.client = await tx.clients.get(state.found.client_id)
                found = await tx.users.get_with_agency(state.found.user_id) if state.found.user_id else None
                state.user, state.agency = found if found else (None, None)
    # Authlib reads the header: a token from the form body is handed over the same way.
    state.request = PortalRequest("GET", server.base + PATH, [], f"Bearer {token}")
    answer = decide(state, lambda: server.create_endpoint_response("userinfo", state.request))
    return UserinfoResponse(answer.status, answer.body, answer.headers)
