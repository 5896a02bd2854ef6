"""second factors: authenticator apps, security keys and passkeys, recovery codes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from alacop.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_methods",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_used_at", UTCDateTime),
        sa.Column("totp_secret", sa.Text),
        sa.Column("totp_last_step", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("credential_id", sa.String(1400), unique=True),
        sa.Column("public_key", sa.Text),
        sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("transports", sa.String(200), nullable=False, server_default="[]"),
        sa.Column("synced", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("discoverable", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_auth_methods_user_id", "auth_methods", ["user_id"])
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("second_factor", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("second_factor")
    op.drop_table("recovery_codes")
    op.drop_table("auth_methods")
