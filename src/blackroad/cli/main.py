"""Entry point of the ``blackroad`` command."""

from __future__ import annotations

import typer

from blackroad import __version__
from blackroad.cli import (
    agents,
    audit,
    cost,
    fleet,
    groups,
    knowledge,
    manage,
    mcp,
    memory,
    models,
    node,
    registry,
    run,
    serve,
    users,
)

app = typer.Typer(
    name="blackroad",
    help="BlackRoad OS: a sovereign AI operating system.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("up")(serve.up)
app.command("node")(node.node)
app.command("run")(run.run)
app.add_typer(models.app, name="models")
app.command("pull")(registry.pull)
app.command("push")(registry.push)
app.add_typer(registry.app, name="registry")
app.add_typer(users.users, name="users")
app.add_typer(users.keys, name="keys")
app.add_typer(groups.groups, name="groups")
app.add_typer(fleet.nodes, name="nodes")
app.command("fleet")(fleet.fleet)
app.command("usage")(users.show_usage)
app.add_typer(audit.app, name="audit")
app.add_typer(memory.chats, name="chats")
app.add_typer(memory.memories, name="memories")
app.add_typer(knowledge.app, name="kb")
app.add_typer(mcp.app, name="mcp")
app.add_typer(agents.app, name="agents")
app.command("cost")(cost.cost)
app.command("list")(manage.list_models)
app.command("ps")(manage.ps)
app.command("show")(manage.show)
app.command("cp")(manage.cp)
app.command("rm")(manage.rm)
app.command("create")(manage.create)
app.command("stop")(manage.stop)


@app.command()
def version() -> None:
    """Print the version of BlackRoad and of the llama.cpp binding."""
    from importlib.metadata import version as package_version

    typer.echo(f"blackroad {__version__} (llama-cpp-python {package_version('llama-cpp-python')})")
