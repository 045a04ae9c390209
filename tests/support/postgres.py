"""A real PostgreSQL for tests: one pgserver per test session, a fresh database per store.

``pgserver`` (PyPI) ships PostgreSQL 16 with pgvector and starts it in about a
second, also as root (it runs postgres as a system user ``pgserver`` it
creates), listening on a Unix socket in its data directory only. Its data
directory is made with :func:`tempfile.mkdtemp`, not under pytest's temporary
root: pgserver opens every folder above it to other users (the postgres user
must reach its socket), and each new pytest session closes
``/tmp/pytest-of-<user>`` again, which would cut the server off from clients
while another session runs beside this one.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

_numbers = itertools.count()


class Postgres:
    """A running PostgreSQL server that hands out empty databases."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    @property
    def admin_url(self) -> str:
        """The libpq URL of its ``postgres`` database, as the superuser."""
        return str(self.server.get_uri())

    def new_database(self) -> str:
        """A new empty database (pgvector installed in it); its ``postgresql://`` URL."""
        name = f"blackroad_{next(_numbers)}"
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        url = make_url(self.admin_url).set(database=name)
        return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A PostgreSQL server in a new data directory, stopped and removed at the end."""
    # Imported here: on import pgserver warns of a missing XDG_RUNTIME_DIR, which
    # sessions that start no PostgreSQL need not hear.
    from pgserver.postgres_server import get_server

    data = Path(tempfile.mkdtemp(prefix="blackroad-pg-"))
    server = get_server(data, cleanup_mode="stop")
    try:
        yield Postgres(server)
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)
