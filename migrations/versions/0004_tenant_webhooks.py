"""tenant webhooks: an endpoint per tenant for account events, delivered through the outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ATTEMPTS = "id, event_id, attempted_at, status_code, error, duration_ms"
_FK = "fk_webhook_events_tenant_event_id"
_IX = "ix_webhook_events_tenant_event_id"


def _alter_webhook_events(alter: Callable[[BatchOperations], None]) -> None:
    """A batch change of `webhook_events`; on SQLite the table is rebuilt (copied and dropped).

    SQLite refuses to drop a table that `webhook_attempts` rows still reference (foreign keys
    are on, and cannot be turned off inside the migration's transaction), so the attempts are
    set aside in a plain copy and put back once the new table stands.
    """
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute(
            f"CREATE TABLE _stencil_attempts_copy AS SELECT {_ATTEMPTS} FROM webhook_attempts"
        )
        op.execute("DELETE FROM webhook_attempts")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        alter(batch_op)
    if sqlite:
        op.execute(
            f"INSERT INTO webhook_attempts ({_ATTEMPTS}) SELECT {_ATTEMPTS} FROM _stencil_attempts_copy"
        )
        op.execute("DROP TABLE _stencil_attempts_copy")


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(
            sa.Column("webhook_url_updated_at", sa.DateTime(timezone=True), nullable=True)
        )

    def alter(b: BatchOperations) -> None:
        b.alter_column("job_id", existing_type=sa.String(length=40), nullable=True)
        b.add_column(sa.Column("tenant_event_id", sa.String(length=40), nullable=True))
        b.create_index(_IX, ["tenant_event_id"], unique=True)
        b.create_foreign_key(_FK, "tenant_events", ["tenant_event_id"], ["id"])

    _alter_webhook_events(alter)


def downgrade() -> None:
    # Account-event deliveries have no job: they go with the column.
    op.execute(
        "DELETE FROM webhook_attempts WHERE event_id IN "
        "(SELECT id FROM webhook_events WHERE job_id IS NULL)"
    )
    op.execute("DELETE FROM webhook_events WHERE job_id IS NULL")

    def alter(b: BatchOperations) -> None:
        b.drop_constraint(_FK, type_="foreignkey")
        b.drop_index(_IX)
        b.drop_column("tenant_event_id")
        b.alter_column("job_id", existing_type=sa.String(length=40), nullable=False)

    _alter_webhook_events(alter)
    # Never a rebuild: every table references tenants (SQLite 3.35+ drops columns in place).
    with op.batch_alter_table("tenants", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("webhook_url_updated_at")
        batch_op.drop_column("webhook_url")
