"""``blackroad audit``: the inspector's bundle, its offline verification, the key, erasure, pruning.

``export`` and ``erase`` work on this machine's database, as ``blackroad
users`` does; ``verify`` needs nothing but the bundle (and the key, given
out of band), and runs on an air-gapped laptop.
"""

from __future__ import annotations

import getpass
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from typer.core import TyperOption

from blackroad.audit.log import AuditLog, Entry
from blackroad.audit.redact import is_container_name, is_secret_name
from blackroad.audit.verify import verify_bundle
from blackroad.cli.client import console, fail
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.store.database import Database

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def _secret_options(words: list[str]) -> frozenset[str]:
    """The options of the command ``words`` ran that take a secret value: those named as
    secrets are (``audit/redact.py``: ``--key``, ``--token``, ``--password``, ``--env``...)."""
    from blackroad.cli.main import app  # the command tree (main imports this module)

    command = typer.main.get_command(app)
    for word in words:
        command = getattr(command, "commands", {}).get(word, command)
    return frozenset(
        flag
        for param in command.params
        if isinstance(param, TyperOption) and not param.is_flag and param.name
        if is_secret_name(param.name) or is_container_name(param.name)
        for flag in param.opts
    )


def audited() -> None:
    """Record the change this command just made (the API audits its own requests).

    The command line is the record: what was done, to whom, with which
    values, minus the values of secret options; and the system user who ran it.
    """
    secret = _secret_options(sys.argv[1:])
    words, hidden = [], False
    for word in sys.argv[1:]:
        words.append("<hidden>" if hidden else word)
        name = word.split("=", 1)[0]
        hidden = name in secret and "=" not in word
        if name in secret and "=" in word:
            words[-1] = f"{name}=<hidden>"
    facts = {"via": "cli", "command": shlex.join(["blackroad", *words]), "user": getpass.getuser()}
    _log().record(Entry("change", facts))


def _log() -> AuditLog:
    settings = Settings.from_env()
    return AuditLog.of(settings, Database(settings.database))


@app.command("export")
def export(
    out: Path = typer.Option(..., help="The bundle file to write."),
    since: datetime | None = typer.Option(
        None, "--from", help="Texts from this time on (UTC); earlier records come without."
    ),
    until: datetime | None = typer.Option(None, "--to", help="Records up to this time (UTC)."),
) -> None:
    """Write the records, their checkpoints and the public key to one bundle for an inspector."""
    records, checkpoints = _log().export(out, _utc(since), _utc(until))
    console.print(f"wrote {out}: {records} records, {checkpoints} checkpoints")


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("prune")
def prune(
    days: int = typer.Option(
        ..., help="Delete kept texts older than this (at least the retention)."
    ),
) -> None:
    """Delete the texts kept with records older than DAYS; the records and their hashes stay."""
    try:
        pruned = _log().prune_texts(days, "local admin")
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"pruned texts older than {days} days; recorded as record {pruned.index}")


@app.command("verify")
def verify(
    bundle: Path,
    key: str | None = typer.Option(
        None, help="The verifier key, from the operator (not the bundle's own copy)."
    ),
) -> None:
    """Check a bundle offline: every record, the tree, every checkpoint's signature."""
    verdict = verify_bundle(bundle, key)
    console.print(verdict.summary(), highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)


@app.command("key")
def key() -> None:
    """Print the verifier key of this installation's audit log (give it to inspectors)."""
    console.print(_log().verifier, highlight=False, soft_wrap=True)


@app.command("erase")
def erase(
    index: int,
    reason: str = typer.Option(..., help="Why (a GDPR request, say); it is recorded."),
    actor: str = typer.Option("local admin", help="Who asks for the erasure."),
) -> None:
    """Erase the texts kept with record INDEX; its hashes stay, and the erasure is recorded."""
    try:
        erasure = _log().erase(index, actor, reason)
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"erased the texts of record {index}; the erasure is record {erasure.index}")
