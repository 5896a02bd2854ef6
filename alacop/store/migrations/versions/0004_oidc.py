"""OpenID Connect: authorized applications, signing keys, authorization codes and tokens

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from alacop.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("client_type", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64)),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("post_logout_redirect_uris", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("require_aal2", sa.Boolean, nullable=False),
        sa.Column("logo_url", sa.String(2048)),
        sa.Column("initiate_login_uri", sa.String(2048)),
        sa.Column("backchannel_logout_uri", sa.String(2048)),
        sa.Column("access_token_format", sa.String(8), nullable=False),
        sa.Column("access_token_seconds", sa.Integer, nullable=False),
        sa.Column("refresh_token_seconds", sa.Integer, nullable=False),
        sa.Column("agency_ids", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("disabled_at", UTCDateTime),
        sa.Column("secret_rotated_at", UTCDateTime),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(8), nullable=False),
        sa.Column("private_sealed", sa.Text, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("retire_after", UTCDateTime),
    )
    op.create_table(
        "oauth_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), sa.ForeignKey("oidc_clients.client_id"), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("redirect_uri", sa.String(2048), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("auth_time", UTCDateTime, nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(512)),
        sa.Column("code_challenge", sa.String(128)),
        sa.Column("code_challenge_method", sa.String(8)),
        sa.Column("acr", sa.String(8), nullable=False),
        sa.Column("amr", sa.String(200), nullable=False),
        sa.Column("used_at", UTCDateTime),
    )
    op.create_index("ix_oauth_codes_expires_at", "oauth_codes", ["expires_at"])
    op.create_table(
        "oauth_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("family_id", sa.String(36), nullable=False),
        sa.Column("client_id", sa.String(64), sa.ForeignKey("oidc_clients.client_id"), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id")),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("access_expires_at", UTCDateTime, nullable=False),
        sa.Column("access_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("refresh_hash", sa.String(64), unique=True),
        sa.Column("refresh_expires_at", UTCDateTime),
        sa.Column("code_hash", sa.String(64)),
        sa.Column("session_hash", sa.String(64)),
        sa.Column("auth_time", UTCDateTime),
        sa.Column("amr", sa.String(200), nullable=False),
        sa.Column("acr", sa.String(8)),
        sa.Column("refreshed_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
    )
    for column in ("family_id", "client_id", "user_id", "code_hash", "session_hash"):
        op.create_index(f"ix_oauth_tokens_{column}", "oauth_tokens", [column])


def downgrade() -> None:
    op.drop_table("oauth_tokens")
    op.drop_table("oauth_codes")
    op.drop_table("signing_keys")
    op.drop_table("oidc_clients")
