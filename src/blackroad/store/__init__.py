"""Persistence: the SQLite database (SQLAlchemy 2 + Alembic) under ``$BLACKROAD_HOME``."""
