"""Authlib's authorization server core, run over what one request needs, read from the store first.

Authlib's `AuthorizationServer`, its grants (authorization code with PKCE and OpenID Connect, refresh
token, client credentials) and its revocation and introspection endpoints make every protocol
decision here. They are synchronous and call back for each record they look at (`query_client`,
`query_authorization_code`, `authenticate_refresh_token`, `query_token`) and for each change they
make (`save_token`, `delete_authorization_code`, `revoke_old_credential`, `revoke_token`). The
portal's store is asynchronous, and a grant's changes must land in one transaction together with a
conditional spend (two redemptions of one code at once: one wins, the other is reuse). So every
endpoint works in three steps:

1. read (async): whatever the request can name, found by its hash or id, goes into a `Loaded`: the
   client, the code or refresh token, the user, agency and session behind it, the signing key;
2. decide (sync, no I/O): Authlib runs over the `Loaded`. The callbacks below answer from it and
   write down what Authlib would change (`Loaded.issued`, `.spend`, `.new_code`, `.revoke`) instead
   of changing it;
3. write (async): the endpoint spends conditionally, stores and audits in one transaction.

No thread and no store call runs while Authlib decides, so the event loop never waits on it and a
request costs no more round trips than the records it names.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import unquote_plus

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749 import errors as oauth_errors
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant, RefreshTokenGrant
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core.grants import OpenIDCode, OpenIDToken

from alacop.core.accounts import Agency, User
from alacop.core.oidc import CODE_LIFETIME, AuthorizationCode, Client, IssuedToken, client_secret_matches
from alacop.core.sessions import Session
from alacop.protocols.oidc._util import epoch, new_secret, secret_hash, session_sid
from alacop.protocols.oidc.claims import user_claims
from alacop.protocols.oidc.keys import Signer

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post"]
ID_TOKEN_SECONDS = 300
# Scopes about a user; a client acting for itself (client_credentials) is granted none of them.
USER_SCOPES = frozenset({"openid", "profile", "email", "agency", "roles", "offline_access"})
GrantName = Literal["code", "refresh"]


class InvalidTargetError(oauth_errors.OAuth2Error):  # type: ignore[misc]
    """RFC 8707 2: a `resource` the server does not know (it defines none)."""

    error = "invalid_target"


@dataclass
class Loaded:
    """What one request may touch, read before Authlib runs; and what Authlib decided, for the write."""

    now: datetime
    issuer: str
    pepper: bytes
    domain: str
    client: Client | None = None
    # the client came from the token endpoint's cache, unchecked until the write
    client_cached: bool = False
    code: AuthorizationCode | None = None
    refresh: IssuedToken | None = None
    user: User | None = None
    agency: Agency | None = None
    session: Session | None = None
    session_live: bool = False
    signer: Signer | None = None
    # revocation and introspection: the token the request names, and which of its kinds it is
    found: IssuedToken | None = None
    found_kind: str = ""
    # decisions
    issued: IssuedToken | None = None
    spend: GrantName | None = None
    reused: GrantName | None = None
    new_code: AuthorizationCode | None = None
    revoke: IssuedToken | None = None
    refused: oauth_errors.OAuth2Error | None = None
    grant_type: str = ""
    # the request Authlib is deciding, for its resource protector (userinfo)
    request: Any = None


_LOADED: ContextVar[Loaded] = ContextVar("alacop_oidc_loaded")
T = TypeVar("T")


def loaded() -> Loaded:
    return _LOADED.get()


def decide(state: Loaded, call: Callable[[], T]) -> T:
    """Runs Authlib (synchronously) over `state`."""
    token = _LOADED.set(state)
    try:
        return call()
    finally:
        _LOADED.reset(token)


# -- models: Authlib's mixins over the portal's values ----------------------------------------------
class OAuthClient:
    """Authlib's ClientMixin over a registered application."""

    def __init__(self, client: Client, pepper: bytes) -> None:
        self.client = client
        self._pepper = pepper

    def get_client_id(self) -> str:
        return self.client.client_id

    @property
    def client_metadata(self) -> dict[str, object]:
        # Read by Authlib's UserInfoEndpoint for `userinfo_signed_response_alg`: the portal answers
        # userinfo in plain JSON (over TLS, to the bearer), so no application asks for a signed one.
        return {}

    def get_default_redirect_uri(self) -> None:
        # OpenID Connect requires redirect_uri on every request; there is no default.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        requested = (scope or "").split()
        if not requested or any(s not in self.client.scopes for s in requested):
            return None
        return " ".join(dict.fromkeys(requested))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret_matches(self.client, self._pepper, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client.public:
            return method == "none"
        return method in CONFIDENTIAL_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return not self.client.public
        return grant_type in ("authorization_code", "refresh_token")


class CodeModel:
    """Authlib's AuthorizationCodeMixin (and what OpenIDCode reads) over a stored code."""

    def __init__(self, record: AuthorizationCode) -> None:
        self.record = record
        self.code_challenge = record.code_challenge
        self.code_challenge_method = record.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope

    def get_nonce(self) -> str | None:
        return self.record.nonce

    def get_auth_time(self) -> int:
        return epoch(self.record.auth_time)

    def get_acr(self) -> str:
        return self.record.acr

    def get_amr(self) -> list[str]:
        return list(self.record.amr)


class TokenModel:
    """Authlib's TokenMixin over one issued token, seen as its access or its refresh token."""

    def __init__(self, record: IssuedToken, kind: str, now: datetime) -> None:
        self.record = record
        self.kind = kind
        self._now = now

    def check_client(self, client: OAuthClient) -> bool:
        return self.record.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.record.scope

    def get_expires_in(self) -> int:
        return int((self.expires_at - self.record.issued_at).total_seconds())

    @property
    def expires_at(self) -> datetime:
        if self.kind == "refresh_token":
            assert self.record.refresh_expires_at is not None
            return self.record.refresh_expires_at
        return self.record.access_expires_at

    def is_expired(self) -> bool:
        spent = self.kind == "refresh_token" and self.record.refreshed_at is not None
        return spent or self._now >= self.expires_at

    def is_revoked(self) -> bool:
        return self.record.revoked_at is not None


# -- the request ------------------------------------------------------------------------------------
class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in items:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class PortalRequest(OAuth2Request):  # type: ignore[misc]
    """An already-read request: the query or form items and the Authorization header."""

    def __init__(self, method: str, uri: str, items: Iterable[tuple[str, str]], authorization: str | None) -> None:
        # OAuth2Request.__init__ less its https check, which `transport_base` made once for the only
        # base these addresses have (PortalServer.base); the rest is what it sets (Authlib 1.9).
        self.method = method
        self.uri = uri
        self.headers = {"Authorization": authorization} if authorization else {}
        self._body: Any = None
        self.client: Any = None
        self.auth_method: Any = None
        self.user: Any = None
        self.authorization_code: Any = None
        self.refresh_token: Any = None
        self.credential: Any = None
        self._scope: Any = None
        self.payload = _Payload(items)

    @property
    def form(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data

    @property
    def args(self) -> dict[str, str]:
        return self.form


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_id and secret from `Authorization: Basic`, each form-decoded (RFC 6749 2.3.1); None when
    there is no Basic header. A Basic header that does not decode is refused outright."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        # binascii.Error for bad base64, ValueError for non-ASCII input (and UnicodeDecodeError, a
        # ValueError, for bytes that are not UTF-8).
        raise _malformed_basic() from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _malformed_basic()
    return unquote_plus(client_id), unquote_plus(secret)


def _malformed_basic() -> oauth_errors.InvalidClientError:
    return oauth_errors.InvalidClientError(status_code=401, description="malformed Basic credentials")


# -- client authentication: Authlib's ClientAuthentication, with these three methods ----------------
def _client_secret_basic(query_client: Callable[[str], OAuthClient | None], request: PortalRequest) -> Any:
    basic = basic_credentials(request.headers.get("Authorization"))
    if basic is None:
        return None
    client = query_client(basic[0])
    return client if client is not None and client.check_client_secret(basic[1]) else None


def _client_secret_post(query_client: Callable[[str], OAuthClient | None], request: PortalRequest) -> Any:
    client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
    if not client_id or not secret:
        return None
    client = query_client(client_id)
    return client if client is not None and client.check_client_secret(secret) else None


def _none(query_client: Callable[[str], OAuthClient | None], request: PortalRequest) -> Any:
    # A public client names itself and proves nothing here; PKCE proves it at the token endpoint. An
    # empty parameter counts as omitted (RFC 6749 3.1); a Basic header is another method.
    if request.form.get("client_secret") or basic_credentials(request.headers.get("Authorization")):
        return None
    client_id = request.form.get("client_id")
    return query_client(client_id) if client_id else None


# -- extensions -------------------------------------------------------------------------------------
class S256Only(CodeChallenge):  # type: ignore[misc]
    """RFC 7636 with S256 only (plain, or an absent method, which means plain, is refused), a challenge
    required of public clients at the authorization endpoint too, and every verifier failure at the
    token endpoint answered `invalid_grant` (RFC 7636 4.6; OAuth 2.1 4.1.3)."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if "code_challenge" not in data and grant.request.client.client.public:
            raise oauth_errors.InvalidRequestError("a public client must use PKCE (code_challenge, S256)")
        if "code_challenge" in data and data.get("code_challenge_method") != "S256":
            raise oauth_errors.InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        try:
            super().validate_code_verifier(grant, result)
        except oauth_errors.InvalidRequestError as exc:
            raise oauth_errors.InvalidGrantError(exc.description or "the code_verifier does not match") from exc
        except oauth_errors.InvalidGrantError as exc:
            raise oauth_errors.InvalidGrantError("the code_verifier does not match") from exc


class _IdTokenClaims:
    """How the portal's ID tokens are signed and what they say; Authlib's OpenIDToken builds them."""

    def get_client_algorithm(self, client: OAuthClient) -> str:
        signer = loaded().signer
        assert signer is not None
        return signer.alg

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        signer = loaded().signer
        assert signer is not None
        return {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}

    def resolve_client_private_key(self, client: OAuthClient) -> Any:
        signer = loaded().signer
        assert signer is not None
        return signer.key

    def get_client_claims(self, client: OAuthClient) -> dict[str, object]:
        state = loaded()
        return {
            "iss": state.issuer,
            "aud": client.get_client_id(),
            "iat": epoch(state.now),
            "exp": epoch(state.now + timedelta(seconds=ID_TOKEN_SECONDS)),
        }

    def generate_user_info(self, user: User, scope: str) -> dict[str, object]:
        state = loaded()
        claims = user_claims(user, state.agency, set(scope.split()), state.domain)
        if state.refresh is not None:
            # A refreshed ID token repeats the sign-in it came from (OIDC Core 12.2).
            record = state.refresh
            assert record.auth_time is not None
            claims.update(auth_time=epoch(record.auth_time), acr=record.acr, amr=list(record.amr))
        source = state.code or state.refresh
        session_hash = source.session_hash if source else None
        if session_hash:
            # Back-Channel Logout 1.0 2.1: the portal session, so a logout token can name it.
            claims["sid"] = session_sid(state.pepper, session_hash)
        return claims


class IdTokens(_IdTokenClaims, OpenIDCode):  # type: ignore[misc]
    def exists_nonce(self, nonce: str, request: PortalRequest) -> bool:
        # Nonces are the application's replay defence, carried through to the ID token; the code
        # itself is single use, so the portal keeps no nonce list.
        return False


class RefreshIdTokens(_IdTokenClaims, OpenIDToken):  # type: ignore[misc]
    pass


# -- grants -----------------------------------------------------------------------------------------
def _check_user(state: Loaded, client: Client) -> User:
    user = state.user
    if user is None or not user.active or not client.allows_agency(user.agency_id):
        raise oauth_errors.InvalidGrantError("the user may not use this application")
    return user


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def generate_authorization_code(self) -> str:
        return new_secret()

    def save_authorization_code(self, code: str, request: PortalRequest) -> None:
        state = loaded()
        session = state.session
        assert session is not None
        assert state.client is not None
        data = request.payload.data
        state.new_code = AuthorizationCode(
            code_hash=secret_hash(code),
            client_id=state.client.client_id,
            user_id=request.user.id,
            redirect_uri=data["redirect_uri"],
            scope=request.scope,
            created_at=state.now,
            expires_at=state.now + CODE_LIFETIME,
            auth_time=session.auth_time,
            session_hash=session.id_hash,
            nonce=data.get("nonce") or None,
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method") if data.get("code_challenge") else None,
            acr=session.aal,
            amr=session.amr,
        )

    def query_authorization_code(self, code: str, client: OAuthClient) -> CodeModel:
        state = loaded()
        record = state.code
        if record is None or record.code_hash != secret_hash(code) or record.client_id != client.get_client_id():
            raise oauth_errors.InvalidGrantError("the code is not valid")
        if record.used_at is not None:
            state.reused = "code"
            raise oauth_errors.InvalidGrantError("the code is not valid")
        if state.now >= record.expires_at:
            raise oauth_errors.InvalidGrantError("the code has expired")
        return CodeModel(record)

    def authenticate_user(self, authorization_code: CodeModel) -> User:
        state = loaded()
        user = _check_user(state, self.request.client.client)
        if not state.session_live:
            # Ended, or past its idle or absolute limit (CJIS AC-11, IA-5 j): no tokens from a stale sign-in.
            raise oauth_errors.InvalidGrantError("the sign-in behind this code has ended")
        return user

    def delete_authorization_code(self, authorization_code: CodeModel) -> None:
        loaded().spend = "code"


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    # Refresh tokens rotate on every use (OAuth 2.0 Security BCP 4.14.2); `mint` decides whether the
    # new grant still carries offline_access.
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> TokenModel:
        state = loaded()
        record = state.refresh
        if (
            record is None
            or record.refresh_hash != secret_hash(refresh_token)
            or record.client_id != self.request.client.get_client_id()
            or record.revoked_at is not None
        ):
            raise oauth_errors.InvalidGrantError("the refresh token is not valid")
        if record.refreshed_at is not None:
            state.reused = "refresh"
            raise oauth_errors.InvalidGrantError("the refresh token is not valid")
        if record.refresh_expires_at is None or state.now >= record.refresh_expires_at:
            raise oauth_errors.InvalidGrantError("the refresh token has expired")
        return TokenModel(record, "refresh_token", state.now)

    def authenticate_user(self, refresh_token: TokenModel) -> User:
        return _check_user(loaded(), self.request.client.client)

    def revoke_old_credential(self, refresh_token: TokenModel) -> None:
        loaded().spend = "refresh"


class ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        if "resource" in self.request.form:
            raise InvalidTargetError("no resource servers are defined")

    def validate_requested_scope(self) -> None:
        allowed = [s for s in self.request.client.client.scopes if s not in USER_SCOPES]
        if any(s not in allowed for s in (self.request.payload.scope or "").split()):
            raise oauth_errors.InvalidScopeError("a requested scope is not allowed for this application")


# -- revocation and introspection --------------------------------------------------------------------
def _query_token(token_string: str, hint: str | None) -> TokenModel | None:
    state = loaded()
    if state.found is None or len(token_string) > 4096:
        return None
    return TokenModel(state.found, state.found_kind, state.now)


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. Revoking either token of a grant revokes its whole family (RFC 7009 2.1)."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenModel | None:
        return _query_token(token_string, token_type_hint)

    def authenticate_token(self, request: PortalRequest, client: OAuthClient) -> TokenModel | None:
        # A token of another client is answered like an unknown one (RFC 7009 2.2): revoking it is
        # refused, and the caller learns nothing about it.
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        return token if token is not None and token.check_client(client) else None

    def revoke_token(self, token: TokenModel, request: PortalRequest) -> None:
        if not token.is_revoked():
            loaded().revoke = token.record


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662, for the confidential client that holds the token only."""

    CLIENT_AUTH_METHODS = CONFIDENTIAL_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenModel | None:
        return _query_token(token_string, token_type_hint)

    def check_permission(self, token: TokenModel, client: OAuthClient, request: PortalRequest) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: TokenModel) -> dict[str, object]:
        state = loaded()
        record = token.record
        body: dict[str, object] = {
            "active": True,
            "client_id": record.client_id,
            "sub": record.user_id or record.client_id,
            "aud": record.client_id,
            "iss": state.issuer,
            "iat": epoch(record.issued_at),
            "exp": epoch(token.expires_at),
        }
        if record.scope:
            body["scope"] = record.scope
        if token.kind == "access_token":
            body["token_type"] = "Bearer"
            body["jti"] = record.id
        return body


# -- the server -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Answer:
    """What Authlib answered: a status, a JSON body (or none) and headers; `location` for redirects."""

    status: int
    body: dict[str, object]
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k == "Location"), None)

    @location.setter
    def location(self, value: str) -> None:
        # Authlib's IssuerParameter rewrites the redirect in place to add `iss` (RFC 9207 2).
        self.headers = [(k, v) for k, v in self.headers if k != "Location"] + [("Location", value)]


class _Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


def transport_base(issuer: str) -> str:
    """The address applications reach the endpoints at, for Authlib's https check (RFC 6749 3.1, 3.2).

    Configuration allows a plain-http issuer only on a loopback address (which Authlib accepts) or with
    `behind_tls_proxy`, where applications reach the portal over https at the proxy."""
    if is_secure_transport(issuer):
        return issuer
    return "https://" + issuer.partition("://")[2]


class PortalServer(AuthorizationServer):  # type: ignore[misc]
    """One per process. Holds no request state: each call runs over the `Loaded` set by `decide`."""

    def __init__(self, issuer: str, mint: Callable[..., dict[str, object]]) -> None:
        super().__init__(scopes_supported=None)
        self.issuer = issuer
        self.base = transport_base(issuer)
        self.register_token_generator("default", mint)
        for method, func in (
            ("client_secret_basic", _client_secret_basic),
            ("client_secret_post", _client_secret_post),
            ("none", _none),
        ):
            self.register_client_auth_method(method, func)
        self.register_grant(CodeGrant, [S256Only(required=True), IdTokens(require_nonce=False)])
        self.register_grant(RefreshGrant, [RefreshIdTokens()])
        self.register_grant(ClientCredentials)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)
        _Issuer(issuer)(self)

    def query_client(self, client_id: str) -> OAuthClient | None:
        state = loaded()
        client = state.client
        if client is None or client.client_id != client_id or not client.active:
            return None
        return OAuthClient(client, state.pepper)

    def save_token(self, token: dict[str, object], request: PortalRequest) -> None:
        # `mint` already wrote the token down in `Loaded.issued`; the endpoint stores it with the spend.
        assert loaded().issued is not None

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: PortalRequest) -> PortalRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Answer:
        return Answer(status, body if isinstance(body, dict) else {}, list(headers))

    def redirect_error(self, request: PortalRequest, error: oauth_errors.OAuth2Error) -> Answer:
        """An authorization error sent back to the client's checked redirect URI, naming the issuer
        (RFC 9207 2 asks for `iss` on error responses too)."""
        answer = self.handle_error_response(request, error)
        self.execute_hook("after_create_authorization_response", answer)
        return answer

    def handle_error_response(self, request: PortalRequest, error: oauth_errors.OAuth2Error) -> Answer:
        loaded().refused = error
        answer: Answer = super().handle_error_response(request, error)
        return answer
