"""costs: usage ledger, tenant budgets, tenant events outbox, priced cost on jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost", sa.JSON(), nullable=True))

    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("template", sa.String(length=40), nullable=False),
        sa.Column("template_version", sa.String(length=20), nullable=False),
        sa.Column("gpu_class", sa.String(length=40), nullable=False),
        sa.Column("gpu_type", sa.String(length=40), nullable=False),
        sa.Column("payer", sa.String(length=10), nullable=False),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.Column("billable_ms", sa.BigInteger(), nullable=False),
        sa.Column("run_ms", sa.BigInteger(), nullable=False),
        sa.Column("execution_ms", sa.BigInteger(), nullable=False),
        sa.Column("queue_ms", sa.BigInteger(), nullable=False),
        sa.Column("cold_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("usd_per_second", sa.String(length=40), nullable=False),
        sa.Column("rate", sa.JSON(), nullable=False),
        sa.Column("usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_usage_ledger_job_attempt"),
    )
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_usage_ledger_created", ["created_at"], unique=False)
        batch_op.create_index(
            "ix_usage_ledger_template_created", ["template", "created_at"], unique=False
        )
        batch_op.create_index("ix_usage_ledger_tenant_month", ["tenant_id", "month"], unique=False)

    op.create_table(
        "tenant_budgets",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("monthly_usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.String(length=12), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id"),
    )

    op.create_table(
        "tenant_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("dedupe_key", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "type", "dedupe_key", name="uq_tenant_events_once"),
    )
    with op.batch_alter_table("tenant_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tenant_events_undelivered", ["delivered_at", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tenant_events", schema=None) as batch_op:
        batch_op.drop_index("ix_tenant_events_undelivered")
    op.drop_table("tenant_events")
    op.drop_table("tenant_budgets")
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_ledger_tenant_month")
        batch_op.drop_index("ix_usage_ledger_template_created")
        batch_op.drop_index("ix_usage_ledger_created")
    op.drop_table("usage_ledger")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("cost")
