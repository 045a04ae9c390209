"""Agents over HTTP: definitions (``/api/agents``), their runs, events and approvals.

Inference scope. A user sees their own agents and runs; another's are
answered as ones that do not exist (404). An administrator also sees every
run, and may decide any pending approval or cancel any run, as the run's
owner may; but of another's run's knowledge searches they see only the
passages of bases they may read themselves (``journal.shown_to``).

Fixed paths (``/agents/runs``, ``/agents/approvals``, ``/agents/tools``) are
declared before ``/agents/{agent_id}`` so they are never read as an id.

A run's events are Server-Sent Events: ``event: step`` or ``event: run``,
each with the step or the run as JSON in ``data``. The stream starts with
the run's steps so far and its state, and ends when the run stops running:
finished, or awaiting a person's approval.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from blackroad.agents.definitions import MAX_STEPS_LIMIT, AgentDefinition, MemoryAccess, Policy
from blackroad.agents.journal import Run, shown_to
from blackroad.agents.runner import may_act_on
from blackroad.api.auth import principal, require_scope
from blackroad.api.recording import request_log
from blackroad.api.state import agents, inference, journal, knowledge, runner, toolbox
from blackroad.errors import NotFound

router = APIRouter(prefix="/api/agents", dependencies=[Depends(require_scope("inference"))])
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentBody(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    model: Annotated[str, Field(min_length=1, max_length=256)]
    system: Annotated[str, Field(max_length=20_000)] = ""
    tools: Annotated[list[Name], Field(max_length=64)] = Field(default_factory=list)
    knowledge_bases: Annotated[list[int], Field(max_length=32)] = Field(default_factory=list)
    memory: MemoryAccess = "none"
    max_steps: Annotated[int, Field(ge=1, le=MAX_STEPS_LIMIT)] = 8
    approval: Annotated[dict[Name, Policy], Field(max_length=64)] = Field(default_factory=dict)
    tool_choice: Annotated[list[Name], Field(max_length=MAX_STEPS_LIMIT)] = Field(
        default_factory=list
    )
    max_tokens: Annotated[int, Field(ge=16, le=8192)] = 512
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2
    repeat_penalty: Annotated[float, Field(ge=0.5, le=2)] = 1.1


class RunBody(_Strict):
    input: Annotated[str, Field(min_length=1, max_length=100_000)]
    stream: bool = False


class Decision(_Strict):
    approve: bool
    reason: Annotated[str | None, Field(max_length=2000)] = None


async def _definition(body: AgentBody, request: Request) -> AgentDefinition:
    """The body as a definition, checked against what exists and what the caller may use."""
    caller = principal(request)
    definition = AgentDefinition.of(body.model_dump())
    await run_in_threadpool(toolbox(request).check, definition)  # reads the MCP registry
    await inference(request).resolve(definition.model, caller)
    for base in definition.knowledge_bases:
        await run_in_threadpool(knowledge(request).get, caller.user, base)
    return definition


def _visible_run(request: Request, run_id: int) -> Run:
    run = journal(request).run(run_id)
    if not may_act_on(principal(request), run):
        raise NotFound(f"run {run_id} not found")
    return run


async def _viewer(request: Request, run: Run) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """How the caller sees the run's steps: whole if it is theirs, else as ``shown_to`` them."""
    caller = principal(request)
    if caller.user == run.owner:
        return lambda step: step
    bases = await run_in_threadpool(knowledge(request).visible, caller.user)
    readable = {base.id for base in bases}
    return lambda step: shown_to(step, readable)


async def _shown(
    events: AsyncIterator[dict[str, Any]], show: Callable[[dict[str, Any]], dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        yield {**event, "step": show(event["step"])} if event["type"] == "step" else event


def _sse(
    request: Request, events: AsyncIterator[dict[str, Any]], status: int = 200
) -> StreamingResponse:
    """A run's events as Server-Sent Events.

    Watching a run puts no load on a model: the stream hands its place under
    the caller's concurrency limit back at once, since the run's own model
    calls (admitted as the owner's requests) may need it.
    """
    admission = request_log(request).admission
    if admission is not None:
        admission.finish(0)

    async def lines() -> AsyncIterator[str]:
        async for event in events:
            payload = event[event["type"]]
            yield f"event: {event['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        lines(), status_code=status, media_type="text/event-stream", headers=headers
    )


# -- fixed paths first ---------------------------------------------------------


@router.get("/tools")
async def list_tools(request: Request) -> dict[str, Any]:
    """The built-in tools an agent may name: schemas, side effects, and whether they ask first."""
    return {
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters,
             "side_effects": t.side_effects, "outbound": t.outbound,
             "needs_approval": t.needs_approval}
            for t in toolbox(request).builtins.values()
        ]
    }  # fmt: skip


@router.get("/runs")
async def list_runs(
    request: Request,
    agent: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: Annotated[list[str] | None, Query(max_length=8)] = None,
    everyone: Annotated[bool, Query(alias="all")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The caller's runs, newest first; an administrator's ``all=true``: everyone's."""
    caller = principal(request)
    owner = None if everyone and "admin" in caller.scopes else caller.user
    found = await run_in_threadpool(journal(request).runs, owner, agent, status or (), limit)
    return {"runs": [run.to_json() for run in found]}


@router.get("/approvals")
async def list_approvals(request: Request) -> dict[str, Any]:
    """Calls waiting for the caller's decision: on their runs, or on any run for an admin."""
    caller = principal(request)
    owner = None if "admin" in caller.scopes else caller.user

    def pending() -> list[dict[str, Any]]:
        found = []
        for run in journal(request).runs(owner, statuses=["awaiting_approval"], limit=500):
            for step in journal(request).steps(run.id):
                if step.status == "awaiting_approval":
                    found.append({"run": run.to_json(), "step": step.to_json()})
        return found

    return {"approvals": await run_in_threadpool(pending)}


@router.get("/runs/{run_id}")
async def get_run(run_id: Id, request: Request) -> dict[str, Any]:
    run = await run_in_threadpool(_visible_run, request, run_id)
    steps = await run_in_threadpool(journal(request).steps, run_id)
    show = await _viewer(request, run)
    return {**run.to_json(), "steps": [show(step.to_json()) for step in steps]}


@router.get("/runs/{run_id}/events")
async def run_events(run_id: Id, request: Request) -> StreamingResponse:
    run = await run_in_threadpool(_visible_run, request, run_id)
    show = await _viewer(request, run)
    return _sse(request, _shown(runner(request).events(run_id), show))


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: Id, request: Request) -> dict[str, Any]:
    run = await run_in_threadpool(_visible_run, request, run_id)
    return (await runner(request).cancel(principal(request), run)).to_json()


@router.post("/runs/{run_id}/steps/{step_id}/decision")
async def decide(run_id: Id, step_id: Id, body: Decision, request: Request) -> dict[str, Any]:
    """Approve or reject a call awaiting approval; the run goes on either way."""
    run = await run_in_threadpool(_visible_run, request, run_id)
    step = await run_in_threadpool(journal(request).step, run_id, step_id)
    decided = await runner(request).decide(principal(request), run, step, body.approve, body.reason)
    return decided.to_json()


# -- definitions ---------------------------------------------------------------


@router.get("")
async def list_agents(request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(agents(request).list, principal(request).user)
    return {"agents": [agent.to_json() for agent in found]}


@router.post("", status_code=201)
async def create_agent(body: AgentBody, request: Request) -> dict[str, Any]:
    definition = await _definition(body, request)
    created = await run_in_threadpool(agents(request).create, principal(request).user, definition)
    return created.to_json()


@router.get("/{agent_id}")
async def get_agent(agent_id: Id, request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(agents(request).get, principal(request).user, agent_id)
    return found.to_json()


@router.put("/{agent_id}")
async def replace_agent(agent_id: Id, body: AgentBody, request: Request) -> dict[str, Any]:
    """A new definition for the agent; runs under way keep the one they started with."""
    owner = principal(request).user
    await run_in_threadpool(agents(request).get, owner, agent_id)  # 404 before any check
    definition = await _definition(body, request)
    updated = await run_in_threadpool(agents(request).update, owner, agent_id, definition)
    return updated.to_json()


@router.delete("/{agent_id}", status_code=204)
async def delete_agent(agent_id: Id, request: Request) -> Response:
    """Delete the agent with its runs and its sandbox's files; runs under way are stopped."""
    owner = principal(request).user
    await run_in_threadpool(agents(request).get, owner, agent_id)  # 404 before anything stops
    await runner(request).stop_runs_of(agent_id)
    await run_in_threadpool(agents(request).delete, owner, agent_id)
    return Response(status_code=204)


@router.post("/{agent_id}/runs", status_code=201, response_model=None)
async def start_run(
    agent_id: Id, body: RunBody, request: Request
) -> dict[str, Any] | StreamingResponse:
    """Start a run; with ``stream``, its events until it finishes or awaits approval."""
    caller = principal(request)
    agent = await run_in_threadpool(agents(request).get, caller.user, agent_id)
    run = await runner(request).start(caller, agent, body.input)
    if body.stream:
        return _sse(request, runner(request).events(run.id), status=201)
    return run.to_json()
