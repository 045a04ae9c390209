"""A SQLite database migrated to a given revision: the data an upgrade test starts from."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event

from blackroad.store import sqlite
from blackroad.store.database import _on_connect


def upgrade_to(path: Path, revision: str) -> None:
    """Create (or upgrade) the database at ``path`` as the migrations left it at ``revision``."""
    engine = create_engine(f"sqlite:///{path}", module=sqlite.driver)
    event.listen(engine, "connect", _on_connect)
    config = Config()
    config.set_main_option("script_location", "blackroad.store:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()
