"""The schema as SQLAlchemy Core tables. Migrations under migrations/ create the same shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database, aware UTC in Python, the same on SQLite and PostgreSQL."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


metadata = MetaData()

agencies = Table(
    "agencies",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("ori", String(9), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("email_domains", Text, nullable=False, default="[]"),
    Column("created_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("email", String(320), nullable=False),
    Column("name", String(200), nullable=False),
    Column("agency_id", String(36), ForeignKey("agencies.id"), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("password_hash", String(200)),
    Column("password_changed_at", UTCDateTime),
    Column("must_change_password", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime),
    Column("disabled_at", UTCDateTime),
    Column("meta", Text, nullable=False, default="{}"),
    Column("training_date", String(10)),
)
Index("ix_users_email", users.c.email)

# Agency coordinators act only within the agencies listed here for them (CJIS AC-2, AC-6).
coordinator_agencies = Table(
    "coordinator_agencies",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("agency_id", String(36), ForeignKey("agencies.id"), primary_key=True),
)

registrations = Table(
    "registrations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("agency_id", String(36), ForeignKey("agencies.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False, index=True),
    Column("application", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("status_token_hash", String(64), nullable=False, unique=True),
    Column("decided_at", UTCDateTime),
    Column("decided_by", String(36)),
    Column("decision_reason", Text),
    Column("user_id", String(36)),
)
# One pending request per email, even when two arrive at once (READ COMMITTED reads cannot promise it).
Index(
    "ux_registrations_pending_email",
    registrations.c.email,
    unique=True,
    sqlite_where=registrations.c.status == "pending",
    postgresql_where=registrations.c.status == "pending",
)

activation_links = Table(
    "activation_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

# CJIS IA-4 d: a deleted account's username is not given to anyone else for a year.
retired_usernames = Table(
    "retired_usernames",
    metadata,
    Column("username", String(32), primary_key=True),
    Column("retired_at", UTCDateTime, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("auth_time", UTCDateTime, nullable=False),
    Column("aal", String(8), nullable=False),
    Column("amr", String(200), nullable=False),
    Column("source_ip", String(64), nullable=False),
    Column("user_agent", String(512), nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String(32)),
    Column("second_factor", String(16)),
)

flows = Table(
    "flows",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("binding", String(64), nullable=False),
    # Text since 0007: an application's authorization request can be longer than 2,048 characters.
    Column("return_to", Text),
    Column("payload", Text, nullable=False),
)

login_throttles = Table(
    "login_throttles",
    metadata,
    Column("key", String(320), primary_key=True),
    # The times of the latest failures, as JSON; only as many as the lockout threshold are kept.
    Column("failure_times", Text, nullable=False),
    Column("locked_at", UTCDateTime),
)

auth_methods = Table(
    "auth_methods",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("totp_secret", Text),
    Column("totp_last_step", BigInteger, nullable=False, default=0),
    Column("credential_id", String(1400), unique=True),
    Column("public_key", Text),
    Column("sign_count", BigInteger, nullable=False, default=0),
    Column("transports", String(200), nullable=False, default="[]"),
    Column("synced", Boolean, nullable=False, default=False),
    Column("discoverable", Boolean, nullable=False, default=False),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("code_hash", String(64), nullable=False),
    Column("salt", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("occurred_at", String(32), nullable=False),
    Column("type", String(48), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(128), nullable=False),
    Column("actor_id", String(36)),
    Column("subject_id", String(36)),
    Column("subject_name", String(254)),
    Column("agency_id", String(36)),
    Column("source_ip", String(64), nullable=False),
    Column("user_agent", String(512), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_audit_events_occurred_at", audit_events.c.occurred_at)
Index("ix_audit_events_subject_id", audit_events.c.subject_id)
Index("ix_audit_events_type", audit_events.c.type)
Index("ix_audit_events_agency_id", audit_events.c.agency_id)

# One row holding the chain's tip; locking it serialises appends across every instance.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("hash", String(64), nullable=False),
)

# -- OpenID Connect: authorized applications, signing keys, codes and tokens (0004_oidc) -------------------
oidc_clients = Table(
    "oidc_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("client_type", String(16), nullable=False),
    Column("secret_hash", String(64)),
    Column("redirect_uris", Text, nullable=False),
    Column("post_logout_redirect_uris", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("require_aal2", Boolean, nullable=False),
    Column("logo_url", String(2048)),
    Column("initiate_login_uri", String(2048)),
    Column("backchannel_logout_uri", String(2048)),
    Column("access_token_format", String(8), nullable=False),
    Column("access_token_seconds", Integer, nullable=False),
    Column("refresh_token_seconds", Integer, nullable=False),
    Column("agency_ids", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
    Column("secret_rotated_at", UTCDateTime),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(8), nullable=False),
    Column("private_sealed", Text, nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retire_after", UTCDateTime),
)

oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), ForeignKey("oidc_clients.client_id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("redirect_uri", String(2048), nullable=False),
    Column("scope", String(500), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("auth_time", UTCDateTime, nullable=False),
    Column("session_hash", String(64), nullable=False),
    Column("nonce", String(512)),
    Column("code_challenge", String(128)),
    Column("code_challenge_method", String(8)),
    Column("acr", String(8), nullable=False),
    Column("amr", String(200), nullable=False),
    Column("used_at", UTCDateTime),
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("family_id", String(36), nullable=False, index=True),
    Column("client_id", String(64), ForeignKey("oidc_clients.client_id"), nullable=False, index=True),
    Column("user_id", String(36), ForeignKey("users.id"), index=True),
    Column("scope", String(500), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("access_expires_at", UTCDateTime, nullable=False),
    Column("access_hash", String(64), nullable=False, unique=True),
    Column("refresh_hash", String(64), unique=True),
    Column("refresh_expires_at", UTCDateTime),
    Column("code_hash", String(64), index=True),
    Column("session_hash", String(64), index=True),
    Column("auth_time", UTCDateTime),
    Column("amr", String(200), nullable=False),
    Column("acr", String(8)),
    Column("refreshed_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    # Set when the token was revoked because every session of its user ended (a disable, a lock, …):
    # applications with a back-channel URI are still to be told; cleared by the one sender that claims it.
    Column("logout_pending", Boolean, nullable=False, default=False),
)

# -- SAML 2.0: service providers, the portal's signing certificates, pending requests (0006_saml) ----------
saml_sps = Table(
    "saml_sps",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("entity_id", String(1024), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("acs", Text, nullable=False),
    Column("certificates", Text, nullable=False),
    Column("authn_requests_signed", Boolean, nullable=False),
    Column("nameid_format", String(100), nullable=False),
    Column("nameid_salt", String(64), nullable=False),
    Column("attributes", Text, nullable=False),
    Column("require_aal2", Boolean, nullable=False),
    Column("idp_initiated", Boolean, nullable=False),
    Column("default_relay_state", String(1024)),
    Column("logo_url", String(2048)),
    Column("start_url", String(2048)),
    Column("agency_ids", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
)

saml_certs = Table(
    "saml_certs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("cert_pem", Text, nullable=False),
    Column("private_sealed", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("active_from", UTCDateTime, nullable=False),
    Column("retire_after", UTCDateTime),
)

saml_requests = Table(
    "saml_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sp_id", String(64), ForeignKey("saml_sps.id"), nullable=False),
    # Unique per application: a second request with an answered ID is a replay.
    Column("request_id", String(256)),
    Column("acs_url", String(2048), nullable=False),
    Column("binding", String(64), nullable=False),
    Column("relay_state", String(1024)),
    Column("force_authn", Boolean, nullable=False),
    Column("is_passive", Boolean, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("answered_at", UTCDateTime),
    UniqueConstraint("sp_id", "request_id", name="uq_saml_requests_sp_request"),
)
