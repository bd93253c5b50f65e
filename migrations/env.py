"""Alembic environment: the engine comes from engine.migrate (or DATABASE_URL for the CLI)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from engine.db.tables import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///.stencil/stencil.db"))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
