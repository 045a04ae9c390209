"""``blackroad agents``: agent definitions and their runs on the running server (``/api/agents``).

Agents are named as their owner named them; a name is turned into the
agent's id through ``GET /api/agents``, so one sees only one's own.

``run``, ``watch``, ``approve`` and ``reject`` print a run's steps as the
server streams them, and exit with the run's state, for scripts:

- 0: succeeded (its answer was printed)
- 1: failed or cancelled (or the command itself failed)
- 2: stopped at its step limit
- 3: awaiting a person's approval (the command to approve is printed)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.text import Text

from blackroad.cli.client import checked, console, fail, server_api, table_of

app = typer.Typer(
    help="Agents: a model that calls tools step by step, asking you before side effects.",
    no_args_is_help=True,
)
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 1, "step_limit": 2, "awaiting_approval": 3}
# What ``GET /api/agents/{id}`` adds to a definition; the rest is sent back as it came.
NOT_DEFINITION = ("id", "owner", "created_at", "updated_at")
# A tool's result can be a megabyte; ``steps --json`` shows it whole.
SHOWN_CHARS = 600

Name = Annotated[str, typer.Argument(help="The agent's name (or its id).")]
RunId = Annotated[int, typer.Argument(help="The run's id.", min=1)]
StepId = Annotated[int, typer.Argument(help="The step's id (as printed with the run).", min=1)]
AsJson = Annotated[bool, typer.Option("--json", help="Print it as JSON.")]
File = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="A JSON file with the whole definition; options override."),
]
Model = Annotated[str | None, typer.Option(help="The model the agent thinks with.")]
System = Annotated[str | None, typer.Option(help="The system prompt.")]
Tools = Annotated[
    list[str] | None,
    typer.Option("--tool", help="A tool it may call: built-in, SERVER__TOOL or mcp:SERVER."),
]
Bases = Annotated[
    list[str] | None, typer.Option("--kb", help="A knowledge base (name or id) it may search.")
]
Memory = Annotated[str | None, typer.Option(help="Its access to your memories: none|read|write.")]
MaxSteps = Annotated[int | None, typer.Option(help="The most model steps a run takes.")]
Ask = Annotated[list[str] | None, typer.Option("--ask", help="A tool that waits for approval.")]
Deny = Annotated[list[str] | None, typer.Option("--deny", help="A tool it may never call.")]
First = Annotated[
    list[str] | None,
    typer.Option(
        "--first",
        help="The tool choice of the first steps in order: auto, required, none or a tool.",
    ),
]


def _print(value: str | Text, style: str = "") -> None:
    console.print(value, style=style, markup=False, highlight=False, soft_wrap=True)


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


# -- definitions -----------------------------------------------------------------


def _agents(api: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = checked(api.get("/api/agents")).json()["agents"]
    return found


def _agent(api: httpx.Client, ref: str) -> dict[str, Any]:
    """The caller's agent named ``ref``, or failing that the one with that id."""
    agents = _agents(api)
    named = [a for a in agents if a["name"] == ref] or [
        a for a in agents if ref.isdigit() and a["id"] == int(ref)
    ]
    if not named:
        fail(f"you have no agent named {ref!r} (blackroad agents list shows yours)")
    return named[0]


def _from_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except OSError as error:
        fail(f"{path}: {error.strerror}")
    except ValueError as error:
        fail(f"{path} is not JSON: {error}")
    if not isinstance(value, dict):
        fail(f"{path} must hold a JSON object, the agent's definition")
    return value


def _base_id(api: httpx.Client, ref: str) -> int:
    return int(checked(api.get(f"/api/kb/{ref}")).json()["id"])


def _changes(
    api: httpx.Client,
    *,
    model: str | None,
    system: str | None,
    tools: list[str] | None,
    bases: list[str] | None,
    memory: str | None,
    max_steps: int | None,
    ask: list[str] | None,
    deny: list[str] | None,
    first: list[str] | None,
) -> dict[str, Any]:
    """The definition's fields the options set; a list option replaces the whole list."""
    changes: dict[str, Any] = {
        key: value
        for key, value in (("model", model), ("system", system), ("tools", tools),
                           ("memory", memory), ("max_steps", max_steps), ("tool_choice", first))
        if value is not None
    }  # fmt: skip
    if bases is not None:
        changes["knowledge_bases"] = [_base_id(api, ref) for ref in bases]
    if ask is not None or deny is not None:
        changes["approval"] = {
            **dict.fromkeys(ask or [], "ask"),
            **dict.fromkeys(deny or [], "deny"),
        }
    return changes


@app.command("list")
def list_agents() -> None:
    """List your agents."""
    with server_api() as api:
        agents = _agents(api)
    table = table_of("NAME", "ID", "MODEL", "TOOLS", "MEMORY", "MAX STEPS", "UPDATED")
    for agent in agents:
        table.add_row(
            Text(agent["name"]), str(agent["id"]), Text(agent["model"]),
            Text(", ".join(agent["tools"]) or "-"), agent["memory"], str(agent["max_steps"]),
            agent["updated_at"].replace("T", " ")[:16],
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show(name: Name, as_json: AsJson = False) -> None:
    """Show an agent's definition."""
    with server_api() as api:
        agent = _agent(api, name)
    if as_json:
        _echo_json(agent)
        return
    table = table_of("FIELD", "VALUE", overflow="fold")
    for field, value in agent.items():
        shown = value if isinstance(value, str) else _compact(value)
        table.add_row(field, Text(shown))
    console.print(table)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The agent's name.")],
    file: File = None,
    model: Model = None,
    system: System = None,
    tool: Tools = None,
    kb: Bases = None,
    memory: Memory = None,
    max_steps: MaxSteps = None,
    ask: Ask = None,
    deny: Deny = None,
    first: First = None,
) -> None:
    """Create an agent: --model and what it may use, or -f with the whole definition."""
    with server_api() as api:
        body = {
            **(_from_file(file) if file else {}),
            "name": name,
            **_changes(api, model=model, system=system, tools=tool, bases=kb, memory=memory,
                       max_steps=max_steps, ask=ask, deny=deny, first=first),
        }  # fmt: skip
        if "model" not in body:
            fail("give the agent a --model (or -f with its definition)")
        created = checked(api.post("/api/agents", json=body)).json()
    _print(f"created agent {created['name']!r} (id {created['id']})")


@app.command("edit")
def edit(
    name: Name,
    file: File = None,
    model: Model = None,
    system: System = None,
    tool: Tools = None,
    kb: Bases = None,
    memory: Memory = None,
    max_steps: MaxSteps = None,
    ask: Ask = None,
    deny: Deny = None,
    first: First = None,
) -> None:
    """Change an agent: the options given replace those fields (-f: the whole definition)."""
    with server_api() as api:
        agent = _agent(api, name)
        current = {k: v for k, v in agent.items() if k not in NOT_DEFINITION}
        body = {
            **({"name": agent["name"], **_from_file(file)} if file else current),
            **_changes(api, model=model, system=system, tools=tool, bases=kb, memory=memory,
                       max_steps=max_steps, ask=ask, deny=deny, first=first),
        }  # fmt: skip
        updated = checked(api.put(f"/api/agents/{agent['id']}", json=body)).json()
    _print(f"updated agent {updated['name']!r} (id {updated['id']}); runs under way keep the old")


@app.command("rm")
def remove(name: Name) -> None:
    """Delete an agent."""
    with server_api() as api:
        agent = _agent(api, name)
        checked(api.delete(f"/api/agents/{agent['id']}"))
    _print(f"removed agent {agent['name']!r}")


@app.command("tools")
def tools() -> None:
    """List the built-in tools; one with side effects, or sending data out, waits for approval."""
    with server_api() as api:
        found = checked(api.get("/api/agents/tools")).json()["tools"]
    table = table_of("TOOL", "APPROVAL", "DESCRIPTION", overflow="fold")
    for t in found:
        why = "side effects" if t["side_effects"] else "sends data out"
        approval = f"asks ({why})" if t["needs_approval"] else "runs"
        table.add_row(t["name"], approval, Text(t["description"]))
    console.print(table)


# -- a run's steps as they come ----------------------------------------------------


def _events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-Sent Events as (event, data); the server writes each data on one line."""
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, json.loads(line.removeprefix("data: "))


class RunPrinter:
    """Prints each step of a run once per state it reaches, and the run's end."""

    def __init__(self, since_seq: int = 0) -> None:
        self.since_seq = since_seq  # earlier steps were printed by an earlier command
        self.shown: dict[int, str] = {}  # step id: the last status printed
        self.run: dict[str, Any] | None = None

    def step(self, step: dict[str, Any]) -> None:
        if step["seq"] < self.since_seq or self.shown.get(step["id"]) == step["status"]:
            return
        first_sight = step["id"] not in self.shown
        self.shown[step["id"]] = step["status"]
        head = Text(f"[{step['seq']}] ", style="dim")
        if step["kind"] == "model":
            self._model(head, step["name"], step["output"])
        else:
            self._tool(head, step, first_sight)

    @staticmethod
    def _model(head: Text, model: str, output: dict[str, Any]) -> None:
        head.append(model, style="cyan")
        for call in output.get("calls", []):
            # The tool's step that follows shows the arguments whole.
            _print(head + Text(f" calls {call['name']} {_cut(_compact(call['arguments']), 80)}"))
        if output.get("content") or not output.get("calls"):
            _print(head + Text(": ") + Text(output.get("content") or "(no answer)"))

    def _tool(self, head: Text, step: dict[str, Any], first_sight: bool) -> None:
        status, run_id = step["status"], step["run_id"]
        if first_sight:
            _print(head + Text(step["name"], style="bold") + Text(f" {_compact(step['input'])}"))
        if status == "completed":
            output = step["output"]
            style = "red" if output["is_error"] else ""
            _print(Text("    → ") + Text(_cut(output["content"]), style=style))
        elif status == "awaiting_approval":
            _print("    awaits your approval:", style="yellow")
            _print(f"      blackroad agents approve {run_id} {step['id']}")
            _print(f"      blackroad agents reject {run_id} {step['id']} --reason '...'")
        elif status in ("approved", "rejected"):
            why = f": {step['reason']}" if step["reason"] else ""
            _print(f"    {status} by {step['decided_by']}{why}", style="yellow")

    def ended(self, run: dict[str, Any]) -> None:
        before, self.run = self.run, run
        status = run["status"]
        if status == "running":
            if before is None:
                _print(f"run {run['id']} of agent {run['agent']!r}", style="dim")
        elif status == "succeeded":
            _print("succeeded", style="green")
        elif status == "failed":
            _print(f"failed: {run['error']}", style="red")
        elif status == "step_limit":
            _print("stopped at its step limit, without an answer", style="yellow")
        elif status == "awaiting_approval":
            _print(f"run {run['id']} is awaiting approval", style="yellow")
        else:
            _print(status, style="yellow")


def _follow(response: httpx.Response, printer: RunPrinter) -> None:
    """Print a run's events until the stream ends; exit with the run's state."""
    checked(response)
    try:
        for kind, data in _events(response):
            if kind == "step":
                printer.step(data)
            elif kind == "run":
                printer.ended(data)
    except KeyboardInterrupt:
        run = printer.run
        if run is not None:
            _print(f"stopped watching; the run goes on: blackroad agents watch {run['id']}")
        raise typer.Exit(130) from None
    except httpx.HTTPError as error:
        fail(f"lost the server while watching the run: {error}")
    if printer.run is None or printer.run["status"] == "running":
        fail("the server ended the stream while the run was still running")
    raise typer.Exit(EXIT_CODES[printer.run["status"]])


def _watch(api: httpx.Client, run_id: int, since_seq: int = 0) -> None:
    with api.stream("GET", f"/api/agents/runs/{run_id}/events") as response:
        _follow(response, RunPrinter(since_seq))


@app.command("run")
def run(
    name: Name,
    text: Annotated[str, typer.Argument(help="What to ask the agent.")],
    detach: Annotated[bool, typer.Option(help="Only start it, and print the run's id.")] = False,
) -> None:
    """Run an agent, printing each step as it comes.

    Exit code: 0 succeeded, 1 failed or cancelled, 2 step limit, 3 awaiting approval.
    """
    with server_api() as api:
        agent = _agent(api, name)
        path = f"/api/agents/{agent['id']}/runs"
        if detach:
            started = checked(api.post(path, json={"input": text})).json()
            typer.echo(started["id"])
            return
        with api.stream("POST", path, json={"input": text, "stream": True}) as response:
            _follow(response, RunPrinter())


@app.command("watch")
def watch(run_id: RunId) -> None:
    """Print a run's steps so far, then each new one until it ends or awaits approval.

    Exit code as for run.
    """
    with server_api() as api:
        _watch(api, run_id)


def _decide(run_id: int, step_id: int, approve: bool, reason: str | None, keep: bool) -> None:
    body = {"approve": approve, "reason": reason}
    with server_api() as api:
        path = f"/api/agents/runs/{run_id}/steps/{step_id}/decision"
        decided = checked(api.post(path, json=body)).json()
        _print(f"{decided['status']} step {step_id} of run {run_id}")
        if keep:
            _watch(api, run_id, since_seq=decided["seq"])


Reason = Annotated[str | None, typer.Option(help="Why; the model is told it.")]
NoWatch = Annotated[bool, typer.Option("--no-watch", help="Decide, and do not watch the run.")]


@app.command("approve")
def approve(
    run_id: RunId, step_id: StepId, reason: Reason = None, no_watch: NoWatch = False
) -> None:
    """Let a call that awaits approval run; then watch the run go on (exit code as for run)."""
    _decide(run_id, step_id, True, reason, not no_watch)


@app.command("reject")
def reject(
    run_id: RunId, step_id: StepId, reason: Reason = None, no_watch: NoWatch = False
) -> None:
    """Refuse a call that awaits approval; the run goes on (exit code as for run)."""
    _decide(run_id, step_id, False, reason, not no_watch)


@app.command("cancel")
def cancel(run_id: RunId) -> None:
    """Cancel a run: it takes no further step."""
    with server_api() as api:
        cancelled = checked(api.post(f"/api/agents/runs/{run_id}/cancel")).json()
    _print(f"run {run_id}: {cancelled['status']}")


# -- runs, steps, approvals --------------------------------------------------------


@app.command("runs")
def runs(
    agent: Annotated[str | None, typer.Option(help="Only this agent's runs.")] = None,
    status: Annotated[
        list[str] | None, typer.Option(help="Only runs in this state (repeat for more).")
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Everyone's (administrators).")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 50,
) -> None:
    """List your runs, newest first."""
    params: dict[str, Any] = {"limit": limit, "all": everyone}
    with server_api() as api:
        if agent is not None:
            params["agent"] = _agent(api, agent)["id"]
        if status:
            params["status"] = status
        found = checked(api.get("/api/agents/runs", params=params)).json()["runs"]
    table = table_of("ID", "AGENT", "OWNER", "STATUS", "CREATED", "INPUT")
    for r in found:
        table.add_row(
            str(r["id"]), Text(r["agent"]), Text(r["owner"]), r["status"],
            r["created_at"].replace("T", " ")[:19], Text(_cut(r["input"], 60)),
        )  # fmt: skip
    console.print(table)


def _detail(step: dict[str, Any]) -> str:
    output = step["output"] or {}
    if step["kind"] == "model":
        calls = [f"{c['name']} {_compact(c['arguments'])}" for c in output.get("calls", [])]
        return "; ".join(calls) or output.get("content") or ""
    result = f" → {output['content']}" if "content" in output else ""
    return _cut(_compact(step["input"]) + result, 200)


@app.command("steps")
def steps(run_id: RunId, as_json: AsJson = False) -> None:
    """A run's steps: each model call and each tool call, with what came of it."""
    with server_api() as api:
        found = checked(api.get(f"/api/agents/runs/{run_id}")).json()
    if as_json:
        _echo_json(found)
        return
    table = table_of("STEP", "SEQ", "KIND", "NAME", "STATUS", "MS", "DETAIL", overflow="fold")
    for step in found["steps"]:
        took = "-" if step["duration_ms"] is None else f"{step['duration_ms']:.0f}"
        table.add_row(
            str(step["id"]), str(step["seq"]), step["kind"], Text(step["name"]), step["status"],
            took, Text(_detail(step)),
        )  # fmt: skip
    console.print(table)
    _print(f"run {run_id} of {found['agent']!r}: {found['status']}")


@app.command("approvals")
def approvals() -> None:
    """The calls waiting for your approval."""
    with server_api() as api:
        pending = checked(api.get("/api/agents/approvals")).json()["approvals"]
    if not pending:
        _print("no call awaits approval")
        return
    table = table_of("RUN", "STEP", "AGENT", "TOOL", "ARGUMENTS", overflow="fold")
    for entry in pending:
        waiting, step = entry["run"], entry["step"]
        table.add_row(
            str(waiting["id"]), str(step["id"]), Text(waiting["agent"]), Text(step["name"]),
            Text(_cut(_compact(step["input"]), 200)),
        )  # fmt: skip
    console.print(table)
    _print("decide with: blackroad agents approve|reject RUN STEP [--reason ...]")
