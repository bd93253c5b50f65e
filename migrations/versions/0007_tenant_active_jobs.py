"""tenant active jobs: the count of a tenant's queued and running jobs, kept on the tenant row

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("active_jobs", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE tenants SET active_jobs = (SELECT count(*) FROM jobs"
        " WHERE jobs.tenant_id = tenants.id AND jobs.status IN ('queued', 'running'))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE tenants DROP COLUMN active_jobs")
    else:
        op.drop_column("tenants", "active_jobs")
