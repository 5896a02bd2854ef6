"""Authorized applications (OpenID Connect clients), signing keys, codes and tokens, as plain values.

The provider's protocol work (Authlib's server core, joserfc) lives in `alacop/protocols/oidc/`; this
module holds what the core stores and checks, with no web or JOSE imports.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from alacop.core.errors import InvalidInput

# Scopes an application may be allowed; `agency` adds the agency's name and ORI, `roles` the roles.
KNOWN_SCOPES = ("openid", "profile", "email", "agency", "roles", "offline_access")
# What a client id looks like (new_client_id makes 24 of these characters); anything else is no client.
CLIENT_ID_FORMAT = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_NAME = re.compile(r"^[^\x00-\x1f<>\"{}\\]{1,100}$")


class ClientType(StrEnum):
    CONFIDENTIAL = "confidential"  # authenticates with its secret at the token endpoint
    PUBLIC = "public"  # a browser or native app: no secret, PKCE only


class TokenFormat(StrEnum):
    JWT = "jwt"  # RFC 9068 access tokens, checked by the application with the JWKS
    OPAQUE = "opaque"  # random strings, checked by introspection


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    client_type: ClientType
    redirect_uris: tuple[str, ...]
    created_at: datetime
    # SHA-256 of the pepper and the 256-bit secret (a high-entropy secret needs no slow hash).
    secret_hash: str | None = None
    post_logout_redirect_uris: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    require_aal2: bool = True
    logo_url: str | None = None
    initiate_login_uri: str | None = None
    backchannel_logout_uri: str | None = None
    access_token_format: TokenFormat = TokenFormat.JWT
    access_token_seconds: int = 300
    refresh_token_seconds: int = 8 * 3600
    # Empty means the users of every agency; otherwise only these agencies' users may use it.
    agency_ids: tuple[str, ...] = ()
    disabled_at: datetime | None = None
    secret_rotated_at: datetime | None = None

    @property
    def public(self) -> bool:
        return self.client_type is ClientType.PUBLIC

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def allows_agency(self, agency_id: str) -> bool:
        return not self.agency_ids or agency_id in self.agency_ids


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    # The private JWK as JSON, sealed with the portal's encryption keys (core/secretbox.py).
    private_sealed: str
    public_jwk: str
    created_at: datetime
    # Set when a newer key of the same algorithm took over: published until then, for tokens it signed.
    retire_after: datetime | None = None

    def published(self, now: datetime) -> bool:
        return self.retire_after is None or now < self.retire_after

    @property
    def current(self) -> bool:
        return self.retire_after is None


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    code_hash: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    created_at: datetime
    expires_at: datetime
    auth_time: datetime
    session_hash: str
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    acr: str = "aal2"
    amr: tuple[str, ...] = ()
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """One access token (and its refresh token, if any) of a family that began with one grant."""

    id: str
    family_id: str
    client_id: str
    scope: str
    issued_at: datetime
    access_expires_at: datetime
    access_hash: str
    user_id: str | None = None
    refresh_hash: str | None = None
    refresh_expires_at: datetime | None = None
    code_hash: str | None = None
    session_hash: str | None = None
    auth_time: datetime | None = None
    amr: tuple[str, ...] = field(default_factory=tuple)
    acr: str | None = None
    # When the refresh token was exchanged for the next one; using it again is reuse.
    refreshed_at: datetime | None = None
    revoked_at: datetime | None = None


def new_client_id() -> str:
    return secrets.token_urlsafe(18)


def validate_client_id(value: str) -> str:
    if not CLIENT_ID_FORMAT.fullmatch(value or ""):
        raise InvalidInput("not a client id", code="invalid_client_id")
    return value


def validate_name(value: str) -> str:
    name = " ".join(value.split())
    if not _NAME.fullmatch(name):
        raise InvalidInput('an application name is 1-100 characters, without < > " { } \\', code="invalid_name")
    return name


def validate_redirect_uri(value: str, *, loopback_http: bool = True) -> str:
    """An exact, absolute https URI without fragment or wildcard (RFC 6749 3.1.2, OAuth 2.0 Security BCP).

    http is accepted only for loopback hosts (native apps and development, RFC 8252 7.3).
    """
    uri = value.strip()
    parts = urlsplit(uri)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if (
        not uri
        or len(uri) > 2000
        or any(c.isspace() or ord(c) < 33 for c in uri)
        or parts.fragment
        or "#" in uri
        or "*" in uri
        or parts.username
        or parts.password
        or not parts.hostname
        or parts.scheme not in ("https", "http")
        or (parts.scheme == "http" and not (loopback and loopback_http))
    ):
        raise InvalidInput(
            f"not an exact https redirect URI (http only for localhost): {value!r}", code="invalid_redirect_uri"
        )
    return uri


def validate_scopes(values: list[str]) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in values if s.strip()))
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise InvalidInput(f"unknown scopes: {', '.join(unknown)}", code="invalid_scope")
    if "openid" not in scopes:
        raise InvalidInput("an application needs the openid scope", code="invalid_scope")
    return scopes


def validate_lifetime(seconds: int, *, low: int, high: int, what: str) -> int:
    if not low <= seconds <= high:
        raise InvalidInput(f"{what} must be between {low} and {high} seconds", code="invalid_lifetime")
    return seconds


CODE_LIFETIME = timedelta(seconds=60)


def new_client_secret() -> str:
    # 256 bits: far beyond guessing, so a keyed SHA-256 stores it safely without a slow hash.
    return secrets.token_urlsafe(32)


def client_secret_hash(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, b"client-secret:" + secret.encode("utf-8"), hashlib.sha256).hexdigest()


def client_secret_matches(client: Client, pepper: bytes, secret: str) -> bool:
    if client.secret_hash is None or not secret or len(secret) > 512:
        return False
    return hmac.compare_digest(client.secret_hash, client_secret_hash(pepper, secret))
