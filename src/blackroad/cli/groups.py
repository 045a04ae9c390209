"""``blackroad groups``: groups of users and the models they give access to.

A user in no group may use every model; a user in groups may use the models
of any of them. Model names may be patterns (``gemma3:*``).
"""

from __future__ import annotations

import typer
from rich.table import Table

from blackroad.cli.audit import audited
from blackroad.cli.client import console
from blackroad.cli.users import run

groups = typer.Typer(help="Groups of users, and the models they may use.", no_args_is_help=True)
MODELS = typer.Option([], "--model", help="A model name or pattern; repeatable.")


@groups.command("add")
def add_group(
    name: str,
    model: list[str] = MODELS,
    member: list[str] = typer.Option([], help="A user to add; repeatable."),
) -> None:
    """Add a group; without --model its members may use every model."""
    run(lambda d: d.add_group(name, model or None, member))
    console.print(f"added group '{name}'")
    audited()


@groups.command("list")
def list_groups() -> None:
    """List groups, their models and members."""
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "MODELS", "MEMBERS"):
        table.add_column(column)
    for group, members in run(lambda d: d.groups()):
        models = ",".join(group.models) if group.models is not None else "all"
        table.add_row(group.name, models, ",".join(members) or "-")
    console.print(table)


@groups.command("models")
def set_models(
    name: str,
    model: list[str] = MODELS,
    all_models: bool = typer.Option(False, "--all", help="Give access to every model."),
) -> None:
    """Set the models a group gives access to."""
    if not model and not all_models:
        raise typer.BadParameter("give --model at least once, or --all")
    run(lambda d: d.set_group_models(name, None if all_models else model))
    console.print(f"models of '{name}': {'all' if all_models else ', '.join(model)}")
    audited()


@groups.command("members")
def change_members(
    name: str,
    add: list[str] = typer.Option([], help="A user to add; repeatable."),
    remove: list[str] = typer.Option([], help="A user to remove; repeatable."),
) -> None:
    """Add users to a group, or remove them."""
    run(lambda d: d.change_members(name, add, remove))
    console.print(f"members of '{name}' changed")
    audited()


@groups.command("rm")
def remove_group(name: str) -> None:
    """Remove a group (its members keep their accounts)."""
    run(lambda d: d.delete_group(name))
    console.print(f"removed group '{name}'")
    audited()
