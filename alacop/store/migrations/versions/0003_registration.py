"""new-user registration, activation links, coordinator scopes, retired usernames, training dates

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from alacop.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("training_date", sa.String(10)))
    op.create_index("ix_users_email", "users", ["email"])
    op.create_table(
        "coordinator_agencies",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("agency_id", sa.String(36), sa.ForeignKey("agencies.id"), primary_key=True),
    )
    op.create_table(
        "registrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agency_id", sa.String(36), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("application", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("status_token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("decided_at", UTCDateTime),
        sa.Column("decided_by", sa.String(36)),
        sa.Column("decision_reason", sa.Text),
        sa.Column("user_id", sa.String(36)),
    )
    op.create_index("ix_registrations_agency_id", "registrations", ["agency_id"])
    op.create_index("ix_registrations_email", "registrations", ["email"])
    op.create_index("ix_registrations_status", "registrations", ["status"])
    pending = sa.text("status = 'pending'")
    op.create_index(
        "ux_registrations_pending_email",
        "registrations",
        ["email"],
        unique=True,
        sqlite_where=pending,
        postgresql_where=pending,
    )
    op.create_table(
        "activation_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime),
    )
    op.create_index("ix_activation_links_user_id", "activation_links", ["user_id"])
    op.create_table(
        "retired_usernames",
        sa.Column("username", sa.String(32), primary_key=True),
        sa.Column("retired_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retired_usernames")
    op.drop_table("activation_links")
    op.drop_table("registrations")
    op.drop_table("coordinator_agencies")
    op.drop_index("ix_users_email", "users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("training_date")
