"""``blackroad users``, ``keys`` and ``usage``: people, applications, keys and what they used.

They work on this machine's database directly; the server reads the same
database on every request, so a revoked key is refused on the very next one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import typer
from rich.table import Table

from blackroad.cli.client import console, fail
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.identity.directory import Directory
from blackroad.identity.types import Role, Scope
from blackroad.store.database import Database

users = typer.Typer(help="Users: people and applications.", no_args_is_help=True)
keys = typer.Typer(help="API keys of users.", no_args_is_help=True)
T = TypeVar("T")
_SPAN = re.compile(r"^(\d+)([hdw])$")


def _directory() -> Directory:
    return Directory(Database(Settings.from_env().database_path))


def _run(action: Callable[[Directory], T]) -> T:
    try:
        return action(_directory())
    except BlackRoadError as exc:
        fail(exc.message)


@users.command("add")
def add_user(
    name: str,
    role: str = typer.Option("user", help="admin or user."),
    password_stdin: bool = typer.Option(False, help="Read a password from standard input."),
) -> None:
    """Add a user (a password is only needed to log in to the desktop)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if role not in ("admin", "user"):
        fail("role must be admin or user")
    chosen: Role = "admin" if role == "admin" else "user"
    _run(lambda d: d.add_user(name, chosen, password))
    console.print(f"added {chosen} '{name}'")


@users.command("list")
def list_users() -> None:
    """List users."""
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ROLE", "STATE", "CREATED"):
        table.add_column(column)
    for user in _run(lambda d: d.users()):
        state = "disabled" if user.disabled else "active"
        table.add_row(user.name, user.role, state, user.created_at.strftime("%Y-%m-%d"))
    console.print(table)


@users.command("disable")
def disable_user(name: str) -> None:
    """Disable a user: every key of theirs is refused from the next request on."""
    _run(lambda d: d.set_disabled(name))
    console.print(f"disabled '{name}'")


def _expiry(span: str | None) -> datetime | None:
    if span is None:
        return None
    match = _SPAN.match(span)
    if match is None:
        fail("--expires-in takes a number and h, d or w, e.g. 12h, 30d, 8w")
    hours = int(match[1]) * {"h": 1, "d": 24, "w": 168}[match[2]]
    return datetime.now(UTC) + timedelta(hours=hours)


@keys.command("create")
def create_key(
    user: str,
    name: str = typer.Option("default", help="What the key is for."),
    scope: list[str] = typer.Option(["inference"], help="inference and/or admin; repeatable."),
    model: list[str] = typer.Option([], help="Allow only these models; repeatable."),
    expires_in: str | None = typer.Option(None, help="Lifetime, e.g. 12h, 30d, 8w."),
) -> None:
    """Create an API key for USER. The key is printed once and never stored."""
    scopes: list[Scope] = []
    for item in scope:
        if item not in ("inference", "admin"):
            fail(f"unknown scope {item!r}: use inference or admin")
        scopes.append("admin" if item == "admin" else "inference")
    expires_at = _expiry(expires_in)
    new = _run(lambda d: d.create_key(user, name, scopes, model or None, expires_at))
    console.print(f"API key for '{user}' (shown only now; store it safely):")
    console.print(new.secret, highlight=False, soft_wrap=True)


@keys.command("list")
def list_keys(user: str | None = typer.Option(None, help="Only this user's keys.")) -> None:
    """List keys by prefix (the secret itself is not kept)."""
    table = Table(box=None, header_style="bold")
    for column in ("PREFIX", "USER", "NAME", "SCOPES", "MODELS", "EXPIRES", "STATE"):
        table.add_column(column, no_wrap=True)
    for key, owner in _run(lambda d: d.keys(user)):
        expires = key.expires_at.strftime("%Y-%m-%d %H:%M") if key.expires_at else "never"
        state = "revoked" if key.revoked_at else "active"
        models = ",".join(key.models) if key.models else "all"
        table.add_row(key.prefix, owner, key.name, ",".join(key.scopes), models, expires, state)
    console.print(table)


@keys.command("revoke")
def revoke_key(prefix: str) -> None:
    """Revoke a key by its prefix; it is refused from the next request on."""
    _run(lambda d: d.revoke_key(prefix))
    console.print(f"revoked {prefix}")


def show_usage(
    days: int = typer.Option(7, min=1, help="How many days back."),
    user: str | None = typer.Option(None, help="Only this user."),
) -> None:
    """Requests, tokens and time per day, user, key and model."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows = Database(Settings.from_env().database_path).usage_by_day(since, user)
    table = Table(box=None, header_style="bold")
    columns = ("DAY", "USER", "KEY", "MODEL", "REQUESTS", "TOKENS IN", "TOKENS OUT", "BUSY s")
    for column in columns:
        table.add_column(column, no_wrap=True, justify="right" if column[0] in "RTB" else "left")
    for row in rows:
        table.add_row(
            row["day"], row["user"] or "-", row["key_prefix"] or "-", row["model"],
            str(row["requests"]), str(row["prompt_tokens"]), str(row["completion_tokens"]),
            f"{row['busy_ms'] / 1000:.1f}",
        )  # fmt: skip
    console.print(table)
