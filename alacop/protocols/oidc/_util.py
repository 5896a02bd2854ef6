"""Small pieces shared by the endpoints: secret hashing, wire errors, URIs and audit events."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import errors as oauth_errors

from alacop.core.accounts import User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.oidc import Client

Headers = list[tuple[str, str]]
NO_STORE: Headers = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def new_secret() -> str:
    """A code, opaque access token or refresh token: 256 bits."""
    return secrets.token_urlsafe(32)


def secret_hash(value: str) -> str:
    # Codes and tokens are 256-bit random (or signed JWTs): a plain SHA-256 cannot be reversed.
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def with_params(uri: str, params: Sequence[tuple[str, str]]) -> str:
    """The registered URI with parameters appended, keeping its own query (RFC 6749 3.1.2)."""
    parts = urlsplit(uri)
    extra = urlencode(list(params))
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def session_sid(pepper: bytes, session_hash: str) -> str:
    """The `sid` claim (Back-Channel Logout 1.0 2.1): stable per portal session, reveals nothing.

    A keyed hash of the session's stored hash, never the session cookie itself: an application can
    match a logout token to its own session, but cannot turn a `sid` back into a way in.
    """
    return hmac.new(pepper, b"oidc-sid:" + session_hash.encode("ascii"), hashlib.sha256).hexdigest()[:32]


class OAuthError(Exception):
    """A protocol error with its wire code; raised by the endpoints, rendered by the route."""

    def __init__(self, error: str, description: str = "", *, status: int = 400, headers: Headers | None = None):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or []

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


def _wire(cls: Any) -> str:
    code: str = cls.error
    return code


# The wire codes the portal still writes itself, taken from Authlib's error classes so the spelling
# is the library's (Authlib's own errors carry theirs).
INVALID_REQUEST = _wire(oauth_errors.InvalidRequestError)
INVALID_SCOPE = _wire(oauth_errors.InvalidScopeError)


def client_event(
    kind: EventType,
    outcome: Outcome,
    reason: str,
    client: Client | None,
    *,
    user: User | None = None,
    domain: str = "",
    client_id: str | None = None,
    details: Mapping[str, object] | None = None,
) -> AuditEvent:
    """An event that names the application (and the user, when there is one)."""
    named: dict[str, object] = {
        "client_id": client.client_id if client else (client_id or "")[:64],
        "client_name": client.name if client else None,
        **(details or {}),
    }
    return AuditEvent(
        kind,
        outcome,
        reason,
        actor_id=user.id if user else None,
        subject_id=user.id if user else None,
        subject_name=f"{user.username}@{domain}" if user else None,
        agency_id=user.agency_id if user else None,
        details=named,
    )
