"""The key lookup on SQLite and on PostgreSQL: what every authenticated request reads.

Makes one database of each kind (a SQLite file in a temporary folder; a new
database on a pgserver PostgreSQL 16 over its Unix socket, started here),
each with ``--users`` users, three keys each, and every user in two groups
with model lists, so the lookup's join and its group subquery have rows to
skip. Then, alternating the two in ABBA order, it times ``--lookups`` calls
of ``Database.key_row`` (the one indexed read) and of
``Directory.authenticate`` (that read plus the hash and the checks) on keys
picked at random, from one thread, after a warm-up (psycopg prepares a
statement from its fifth run). It prints per-run medians and the median of
the runs, in microseconds per call, and the query plans of the lookup.

Usage, from the repository root::

    .venv/bin/python -m bench.key_lookup [--users 1000] [--lookups 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.postgres import running_postgres

from blackroad.identity.directory import Directory
from blackroad.store.database import Database


def fill(directory: Directory, users: int) -> list[str]:
    """``users`` users with three keys each, in two groups; the secrets of their keys."""
    directory.add_group("small", ["smollm2:135m"])
    directory.add_group("wild", ["gemma3:*", "qwen*"])
    secrets = []
    for number in range(users):
        name = f"user{number}"
        directory.add_user(name, limits={"rpm": 600}, groups=["small", "wild"])
        secrets += [directory.create_key(name, f"k{k}").secret for k in range(3)]
    return secrets


def per_call(work: Callable[[str], object], keys: list[str]) -> float:
    """Median microseconds of ``work`` over ``keys``, timed one call at a time."""
    times = []
    for key in keys:
        start = time.perf_counter_ns()
        work(key)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def plan(database: Database) -> str:
    if database.dialect == "sqlite":
        rows = database.reader().execute(f"EXPLAIN QUERY PLAN {database._key_row}", ("x",))
        return "; ".join(str(row[3]) for row in rows)
    with database.engine.connect() as connection:
        sql = database._key_row.replace("%s", "'x'")
        return "; ".join(row[0].strip() for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as home, running_postgres() as postgres:
        databases = {
            "sqlite": Database(Path(home) / "blackroad.db"),
            "postgresql": Database(postgres.new_database()),
        }
        secrets = {name: fill(Directory(db), args.users) for name, db in databases.items()}
        for name, database in databases.items():
            print(f"{name} plan: {plan(database)}")
        results: dict[str, dict[str, list[float]]] = {
            name: {"key_row": [], "authenticate": []} for name in databases
        }
        order = list(databases)
        for repeat in range(args.repeats + 1):  # the first is the warm-up
            for name in order if repeat % 2 == 0 else reversed(order):
                database, directory = databases[name], Directory(databases[name])
                keys = rng.choices(secrets[name], k=args.lookups)
                row = per_call(database.key_row, [key[:12] for key in keys])  # the prefix
                full = per_call(directory.authenticate, keys)
                if repeat:
                    results[name]["key_row"].append(row)
                    results[name]["authenticate"].append(full)
                    print(f"run {repeat} {name}: key_row {row:.1f} us, authenticate {full:.1f} us")
        print(f"\n{'database':<12}{'key_row (us)':>16}{'authenticate (us)':>20}")
        for name, figures in results.items():
            row, full = (statistics.median(figures[k]) for k in ("key_row", "authenticate"))
            print(f"{name:<12}{row:>16.1f}{full:>20.1f}")
        for database in databases.values():
            database.close()


if __name__ == "__main__":
    main()
