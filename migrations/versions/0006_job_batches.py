"""job batches: the batch a job ran in (its id and how many jobs shared the prompt)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("batch_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place; a batch rebuild would drop `jobs`, which the
    # webhook outbox and the ledger reference.
    for column in ("batch_size", "batch_id"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        else:
            op.drop_column("jobs", column)
