"""flows.return_to becomes text: an application's request, kept in the sign-in flow, may be long

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.alter_column("return_to", type_=sa.Text, existing_type=sa.String(2048), existing_nullable=True)


def downgrade() -> None:
    # Sign-ins still carrying a longer way back lose it (they end on My applications) rather than fail.
    op.execute("UPDATE flows SET return_to = NULL WHERE length(return_to) > 2048")
    with op.batch_alter_table("flows") as batch:
        batch.alter_column("return_to", type_=sa.String(2048), existing_type=sa.Text, existing_nullable=True)
