"""Alembic migrations, run programmatically so `stencil` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from engine.db.database import Database

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(db: Database) -> Config:
    """An Alembic config bound to this database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = db.engine
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Upgrade the schema to `revision`."""
    command.upgrade(alembic_config(db), revision)
