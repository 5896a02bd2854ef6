"""SAML 2.0: service providers, the portal's signing certificates and pending requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from alacop.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saml_sps",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("entity_id", sa.String(1024), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("acs", sa.Text, nullable=False),
        sa.Column("certificates", sa.Text, nullable=False),
        sa.Column("authn_requests_signed", sa.Boolean, nullable=False),
        sa.Column("nameid_format", sa.String(100), nullable=False),
        sa.Column("nameid_salt", sa.String(64), nullable=False),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("require_aal2", sa.Boolean, nullable=False),
        sa.Column("idp_initiated", sa.Boolean, nullable=False),
        sa.Column("default_relay_state", sa.String(1024)),
        sa.Column("logo_url", sa.String(2048)),
        sa.Column("start_url", sa.String(2048)),
        sa.Column("agency_ids", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("disabled_at", UTCDateTime),
    )
    op.create_table(
        "saml_certs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("private_sealed", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("active_from", UTCDateTime, nullable=False),
        sa.Column("retire_after", UTCDateTime),
    )
    op.create_table(
        "saml_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sp_id", sa.String(64), sa.ForeignKey("saml_sps.id"), nullable=False),
        sa.Column("request_id", sa.String(256)),
        sa.Column("acs_url", sa.String(2048), nullable=False),
        sa.Column("binding", sa.String(64), nullable=False),
        sa.Column("relay_state", sa.String(1024)),
        sa.Column("force_authn", sa.Boolean, nullable=False),
        sa.Column("is_passive", sa.Boolean, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("answered_at", UTCDateTime),
        sa.UniqueConstraint("sp_id", "request_id", name="uq_saml_requests_sp_request"),
    )
    op.create_index("ix_saml_requests_expires_at", "saml_requests", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_saml_requests_expires_at", "saml_requests")
    op.drop_table("saml_requests")
    op.drop_table("saml_certs")
    op.drop_table("saml_sps")
