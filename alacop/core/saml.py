"""SAML 2.0 service providers, the portal's signing certificates and pending requests, as plain values.

The XML work (parsing with defusedxml and lxml, signing with signxml) lives in `alacop/protocols/saml/`;
this module holds what the core stores and checks, with no XML or web imports.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from alacop.core.errors import InvalidInput

# Our own id for a registered service provider, used in addresses (/saml/start/<id>).
SP_ID_FORMAT = re.compile(r"^sp_[A-Za-z0-9_-]{20,40}$")
# A pending request's id: it travels in /saml/continue?request=<id> through the sign-in.
PENDING_ID_FORMAT = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
# How long a received request waits for the sign-in, at least: longer than an IssueInstant may be off
# (5 min) either side, so a replay of a request that was answered is still found and refused. The
# provider stretches it to outlive two sign-in flows (one that expires and the fresh one that follows).
PENDING_LIFETIME = timedelta(minutes=15)
# Assertions: NotBefore this far back (clock skew), NotOnOrAfter this far ahead.
NOT_BEFORE_SKEW = timedelta(seconds=60)
ASSERTION_LIFETIME = timedelta(minutes=5)
# An AuthnRequest's IssueInstant may be this far from our clock, either way.
ISSUE_INSTANT_SKEW = timedelta(minutes=5)


class NameIdFormat(StrEnum):
    PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


NAMEID_CHOICES = {"persistent": NameIdFormat.PERSISTENT, "email": NameIdFormat.EMAIL}
UNSPECIFIED_NAMEID = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"

# What the portal can release about a user; an application gets the ones it was registered with.
ATTRIBUTES = ("username", "email", "name", "agencyName", "agencyOri", "roles", "aal", "amr")


@dataclass(frozen=True, slots=True)
class AssertionConsumer:
    url: str
    index: int
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class ServiceProvider:
    id: str
    entity_id: str
    name: str
    acs: tuple[AssertionConsumer, ...]
    # The application's signing certificates (PEM), from its metadata: AuthnRequest signatures are
    # checked against these only, never against a certificate a request brings with it.
    certificates: tuple[str, ...]
    created_at: datetime
    # A random key per application: the persistent NameID is an HMAC of the user's id under it.
    nameid_salt: str
    authn_requests_signed: bool = False
    nameid_format: NameIdFormat = NameIdFormat.PERSISTENT
    attributes: tuple[str, ...] = ATTRIBUTES
    require_aal2: bool = True
    idp_initiated: bool = False
    default_relay_state: str | None = None
    logo_url: str | None = None
    start_url: str | None = None
    # Empty means the users of every agency; otherwise only these agencies' users may use it.
    agency_ids: tuple[str, ...] = ()
    disabled_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def allows_agency(self, agency_id: str) -> bool:
        return not self.agency_ids or agency_id in self.agency_ids

    @property
    def default_acs(self) -> AssertionConsumer:
        defaults = [a for a in self.acs if a.is_default]
        return defaults[0] if defaults else min(self.acs, key=lambda a: a.index)

    def acs_by_url(self, url: str) -> AssertionConsumer | None:
        # Exact comparison: no normalising, no prefix matching (no open redirect by lookalike).
        return next((a for a in self.acs if a.url == url), None)

    def acs_by_index(self, index: int) -> AssertionConsumer | None:
        return next((a for a in self.acs if a.index == index), None)

    def persistent_id(self, user_id: str) -> str:
        """Stable for this user at this application, unlinkable across applications, never reassigned."""
        digest = hmac.new(bytes.fromhex(self.nameid_salt), user_id.encode(), hashlib.sha256).digest()
        return "_" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class IdpCertificate:
    """One signing key pair of the portal, with its self-signed X.509 certificate."""

    id: str  # SHA-256 fingerprint of the certificate, hex
    cert_pem: str
    private_sealed: str  # PKCS#8 PEM, sealed with the portal's encryption keys
    created_at: datetime
    # Signs from this moment: a rotated-in certificate is published first, so applications can learn it.
    active_from: datetime
    # Set when a newer certificate takes over: published until then, then gone.
    retire_after: datetime | None = None

    def published(self, now: datetime) -> bool:
        return self.retire_after is None or now < self.retire_after

    def signs(self, now: datetime) -> bool:
        return self.active_from <= now and self.published(now)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """An AuthnRequest (or an IdP-initiated start) waiting for the user's sign-in, then answered once."""

    id: str
    sp_id: str
    acs_url: str
    received_at: datetime
    expires_at: datetime
    # The browser it arrived in (a hash of its browser secret): only that browser may have it answered.
    binding: str = ""
    request_id: str | None = None  # the AuthnRequest's ID; None for an IdP-initiated start
    relay_state: str | None = None
    force_authn: bool = False
    is_passive: bool = False
    answered_at: datetime | None = None


def new_sp_id() -> str:
    return "sp_" + secrets.token_urlsafe(18)


def new_pending_id() -> str:
    return secrets.token_urlsafe(32)


def new_nameid_salt() -> str:
    return secrets.token_hex(32)


def validate_sp_id(value: str) -> str:
    if not SP_ID_FORMAT.fullmatch(value):
        raise InvalidInput("no such application", code="sp_not_found")
    return value


def validate_attributes(values: list[str]) -> tuple[str, ...]:
    unknown = [v for v in values if v not in ATTRIBUTES]
    if unknown:
        raise InvalidInput(
            f"unknown attribute {unknown[0]!r}; choose from {', '.join(ATTRIBUTES)}", code="invalid_attribute"
        )
    return tuple(dict.fromkeys(values))


def validate_nameid(value: str) -> NameIdFormat:
    try:
        return NAMEID_CHOICES[value]
    except KeyError as exc:
        raise InvalidInput("the NameID format is persistent or email", code="invalid_nameid_format") from exc


def validate_relay_state(value: str | None) -> str | None:
    # The binding allows 80 bytes; some applications send more, so a little more is kept, not unbounded.
    if value is None or value == "":
        return None
    if len(value.encode()) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput("the relay state is too long or holds control characters", code="invalid_relay_state")
    return value
