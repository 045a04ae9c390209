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

from blackroad.cli.audit import audited
from blackroad.cli.client import console, fail
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.identity.directory import Directory
from blackroad.identity.passwords import MIN_LENGTH
from blackroad.identity.types import Limits, Role, Scope
from blackroad.store.database import Database
from blackroad.store.schema import LimitColumns

users = typer.Typer(help="Users: people and applications.", no_args_is_help=True)
keys = typer.Typer(help="API keys of users.", no_args_is_help=True)
T = TypeVar("T")
_SPAN = re.compile(r"^(\d+)([hdw])$")

# The same limit options on users and keys.
RPM = typer.Option(None, "--rpm", min=0, help="Requests per minute.")
TPM = typer.Option(None, "--tpm", min=0, help="Tokens (in + out) per minute.")
CONCURRENT = typer.Option(None, "--concurrent", min=0, help="Requests in flight at once.")
DAILY = typer.Option(None, "--daily-tokens", min=0, help="Token budget per UTC day.")
MONTHLY = typer.Option(None, "--monthly-tokens", min=0, help="Token budget per UTC month.")
CLEAR = typer.Option(False, "--clear", help="Remove every limit not given here.")


def limit_changes(*values: int | None, clear: bool = False) -> dict[str, int | None]:
    """Limits in ``Limits`` field order; only those given, unless ``clear`` (then all)."""
    return {
        name: value
        for name, value in zip(Limits.names(), values, strict=True)
        if clear or value is not None
    }


def describe_limits(row: LimitColumns) -> str:
    given = [f"{name}={getattr(row, name)}" for name in Limits.names() if getattr(row, name)]
    return " ".join(given) or "-"


def directory() -> Directory:
    return Directory(Database(Settings.from_env().database))


def run(action: Callable[[Directory], T]) -> T:
    try:
        return action(directory())
    except BlackRoadError as exc:
        fail(exc.message)


@users.command("add")
def add_user(
    name: str,
    role: str = typer.Option("user", help="admin or user."),
    password_stdin: bool = typer.Option(False, help="Read a password from standard input."),
    group: list[str] = typer.Option([], help="Make the user a member of this group; repeatable."),
    rpm: int | None = RPM,
    tpm: int | None = TPM,
    concurrent: int | None = CONCURRENT,
    daily_tokens: int | None = DAILY,
    monthly_tokens: int | None = MONTHLY,
) -> None:
    """Add a user (a password is only needed to log in to the desktop)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if role not in ("admin", "user"):
        fail("role must be admin or user")
    chosen: Role = "admin" if role == "admin" else "user"
    limits = limit_changes(rpm, tpm, concurrent, daily_tokens, monthly_tokens)
    run(lambda d: d.add_user(name, chosen, password, limits, group))
    console.print(f"added {chosen} '{name}'")
    audited()


@users.command("list")
def list_users() -> None:
    """List users."""
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ROLE", "STATE", "GROUPS", "LIMITS", "CREATED"):
        table.add_column(column)
    found = directory()
    members: dict[str, list[str]] = {}
    for group, names in found.groups():
        for name in names:
            members.setdefault(name, []).append(group.name)
    for user in found.users():
        table.add_row(
            user.name,
            user.role,
            "disabled" if user.disabled else "active",
            ",".join(members.get(user.name, [])) or "-",
            describe_limits(user),
            user.created_at.strftime("%Y-%m-%d"),
        )
    console.print(table)


@users.command("disable")
def disable_user(name: str) -> None:
    """Disable a user: every key of theirs is refused from the next request on, sessions end."""
    run(lambda d: d.update_user(name, disabled=True))
    console.print(f"disabled '{name}'")
    audited()


@users.command("enable")
def enable_user(name: str) -> None:
    """Enable a disabled user again."""
    run(lambda d: d.update_user(name, disabled=False))
    console.print(f"enabled '{name}'")
    audited()


@users.command("role")
def set_role(name: str, role: str = typer.Argument(..., help="admin or user.")) -> None:
    """Make a user an admin or a user: their sessions end, their keys keep only what the role
    allows, from the next request on."""
    if role not in ("admin", "user"):
        fail("role must be admin or user")
    chosen: Role = "admin" if role == "admin" else "user"
    run(lambda d: d.update_user(name, role=chosen))
    console.print(f"'{name}' is now {'an admin' if chosen == 'admin' else 'a user'}")
    audited()


@users.command("password")
def set_password(name: str) -> None:
    """Set a user's password, read from standard input: their sessions end, their keys go on."""
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_LENGTH:
        fail(f"a password has at least {MIN_LENGTH} characters")
    run(lambda d: d.update_user(name, password=password))
    console.print(f"new password for '{name}'; their sessions are ended")
    audited()


@users.command("limits")
def user_limits(
    name: str,
    rpm: int | None = RPM,
    tpm: int | None = TPM,
    concurrent: int | None = CONCURRENT,
    daily_tokens: int | None = DAILY,
    monthly_tokens: int | None = MONTHLY,
    clear: bool = CLEAR,
) -> None:
    """Set a user's limits, over all their keys; applied from the next request on."""
    limits = limit_changes(rpm, tpm, concurrent, daily_tokens, monthly_tokens, clear=clear)
    run(lambda d: d.update_user(name, limits=limits))
    console.print(f"limits of '{name}': {describe_limits(run(lambda d: d.user(name)))}")
    audited()


def expiry(span: str | None) -> datetime | None:
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
    rpm: int | None = RPM,
    tpm: int | None = TPM,
    concurrent: int | None = CONCURRENT,
    daily_tokens: int | None = DAILY,
    monthly_tokens: int | None = MONTHLY,
) -> None:
    """Create an API key for USER. The key is printed once and never stored."""
    scopes: list[Scope] = []
    for item in scope:
        if item not in ("inference", "admin"):
            fail(f"unknown scope {item!r}: use inference or admin")
        scopes.append("admin" if item == "admin" else "inference")
    expires_at = expiry(expires_in)
    limits = limit_changes(rpm, tpm, concurrent, daily_tokens, monthly_tokens)
    new = run(lambda d: d.create_key(user, name, scopes, model or None, expires_at, limits))
    console.print(f"API key for '{user}' (shown only now; store it safely):")
    console.print(new.secret, highlight=False, soft_wrap=True)
    audited()


@keys.command("list")
def list_keys(user: str | None = typer.Option(None, help="Only this user's keys.")) -> None:
    """List keys by prefix (the secret itself is not kept)."""
    table = Table(box=None, header_style="bold")
    columns = ("PREFIX", "USER", "NAME", "SCOPES", "MODELS", "LIMITS", "EXPIRES", "STATE")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for key, owner in run(lambda d: d.keys(user)):
        expires = key.expires_at.strftime("%Y-%m-%d %H:%M") if key.expires_at else "never"
        state = "revoked" if key.revoked_at else "active"
        models = ",".join(key.models) if key.models else "all"
        table.add_row(
            key.prefix, owner, key.name, ",".join(key.scopes), models, describe_limits(key),
            expires, state,
        )  # fmt: skip
    console.print(table)


@keys.command("limits")
def key_limits(
    prefix: str,
    rpm: int | None = RPM,
    tpm: int | None = TPM,
    concurrent: int | None = CONCURRENT,
    daily_tokens: int | None = DAILY,
    monthly_tokens: int | None = MONTHLY,
    clear: bool = CLEAR,
) -> None:
    """Set a key's limits (its user's limits apply too); applied from the next request on."""
    limits = limit_changes(rpm, tpm, concurrent, daily_tokens, monthly_tokens, clear=clear)
    run(lambda d: d.set_key_limits(prefix, limits))
    key, _ = run(lambda d: d.key(prefix))
    console.print(f"limits of {prefix}: {describe_limits(key)}")
    audited()


@keys.command("revoke")
def revoke_key(prefix: str) -> None:
    """Revoke a key by its prefix; it is refused from the next request on."""
    run(lambda d: d.revoke_key(prefix))
    console.print(f"revoked {prefix}")
    audited()


def show_usage(
    days: int = typer.Option(7, min=1, help="How many days back."),
    user: str | None = typer.Option(None, help="Only this user."),
) -> None:
    """Requests, tokens and time per day, user, key and model."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows = Database(Settings.from_env().database).usage_by_day(since, user)
    table = Table(box=None, header_style="bold")
    columns = (
        "DAY", "USER", "KEY", "MODEL", "NODE", "REQUESTS", "TOKENS IN", "TOKENS OUT",
        "TTFT ms", "AVG ms", "BUSY s",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True, justify="right" if column[0] in "RTAB" else "left")
    for row in rows:
        ttft = "-" if row["avg_ttft_ms"] is None else f"{row['avg_ttft_ms']:.0f}"
        table.add_row(
            row["day"], row["user"] or "-", row["key_prefix"] or "-", row["model"],
            row["node"] or "-", str(row["requests"]), str(row["prompt_tokens"]),
            str(row["completion_tokens"]), ttft, f"{row['avg_duration_ms']:.0f}",
            f"{row['busy_ms'] / 1000:.1f}",
        )  # fmt: skip
    console.print(table)
