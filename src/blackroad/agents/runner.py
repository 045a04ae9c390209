"""The run loop: model, tool calls, results, model, until an answer or the step limit.

The loop keeps nothing that matters in memory. Each turn it reads the run
back from the journal and does the one next thing the journal calls for, so
the same code starts a run, goes on after an approval, and picks a run up
after a crash:

- the last model step has a call with no completed tool step: settle that
  call (run it, ask a human, refuse it, or finish what a restart cut short);
- otherwise, at the step limit: stop there; else call the model again.

A call's recorded result is final: a completed tool step is never run again.
A tool step a crash cut short is run again only if the tool has no side
effects; one with side effects is recorded as interrupted instead, since
nobody can know whether it took effect.

What tools return is data: it reaches the model only as a role "tool"
message. The tools offered and the approval policy come from the run's
snapshot of its definition, so nothing a tool returns can change them.

Each model call is its owner's request, as if they had made it themselves
(``Directory.acting_user``): refused if they may no longer use the model or
were disabled, admitted against their limits. A rate or concurrency limit
makes the run wait its turn; a used-up token budget ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from blackroad.agents.base import Tool, ToolError, ToolResult, validated_call
from blackroad.agents.definitions import Agent
from blackroad.agents.journal import Journal, Run, RunStatus, Step, StepStatus, audit_entry
from blackroad.agents.toolbox import Toolbox
from blackroad.engines.base import Message, collect
from blackroad.errors import BlackRoadError, Conflict, Forbidden, RateLimited
from blackroad.identity.quotas import Admission, Quotas
from blackroad.identity.types import Principal
from blackroad.service import tools as tool_calling
from blackroad.service.inference import Inference
from blackroad.store.schema import RequestRecord

log = logging.getLogger(__name__)
TOOL_TIMEOUT_SECONDS = 60.0
# What the model reads of one result: its window is small, the journal keeps it all.
RESULT_CHARS = 4000
Event = dict[str, Any]


@dataclass(frozen=True)
class PendingCall:
    call: dict[str, Any]  # {"id", "name", "arguments"} as the model step recorded it
    step: Step | None  # its tool step, if it has one yet


def may_act_on(caller: Principal, run: Run) -> bool:
    """The run's owner, or an administrator."""
    return caller.user == run.owner or "admin" in caller.scopes


def pending_call(steps: Sequence[Step]) -> PendingCall | None:
    """The first call of the last model step whose tool step is not completed."""
    models = [step for step in steps if step.kind == "model"]
    if not models:
        return None
    last = models[-1]
    tools = {step.call_id: step for step in steps if step.kind == "tool" and step.seq > last.seq}
    for call in last.output.get("calls", []):
        step = tools.get(call["id"])
        if step is None or step.status != "completed":
            return PendingCall(call, step)
    return None


def history(run: Run, steps: Sequence[Step]) -> list[Message]:
    """The conversation so far, as the journal has it."""
    definition = run.definition
    messages: list[Message] = []
    if definition.system:
        messages.append({"role": "system", "content": definition.system})
    messages.append({"role": "user", "content": run.input})
    for step in steps:
        if step.kind == "model" and step.output.get("calls"):
            messages.append(
                {"role": "assistant", "content": "", "tool_calls": step.output["calls"]}
            )
        elif step.kind == "tool" and step.status == "completed":
            content = step.output["content"]
            if len(content) > RESULT_CHARS:
                content = f"{content[:RESULT_CHARS]}… (cut at {RESULT_CHARS} characters)"
            messages.append({"role": "tool", "name": step.name, "content": content})
    return messages


def _result(content: str, data: dict[str, Any] | None = None, error: bool = True) -> dict[str, Any]:
    return {"content": content, "data": data or {}, "is_error": error}


class Runner:
    """Runs agents' runs as tasks, and tells listeners each step as it is written."""

    def __init__(
        self,
        journal: Journal,
        inference: Inference,
        toolbox: Toolbox,
        owners: Callable[[str], Principal],
        quotas: Quotas,
    ) -> None:
        self.journal = journal
        self.inference = inference
        self.toolbox = toolbox
        self.owners = owners  # a run's owner by name, acting as themselves
        self.quotas = quotas
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.again: set[int] = set()
        self.listeners: dict[int, set[asyncio.Queue[Event]]] = {}

    # -- what the API calls ---------------------------------------------------

    async def start(self, caller: Principal, agent: Agent, text: str) -> Run:
        """A new run, under way; refused now if the caller may not use the agent's model."""
        await self.inference.resolve(agent.definition.model, caller)
        run = await asyncio.to_thread(self.journal.start, agent, text)
        self._spawn(run.id)
        return run

    def resume(self) -> int:
        """Take up every run a stop or a crash left running; how many there were."""
        runs = self.journal.runs(None, statuses=["running"], limit=1_000_000)
        for run in runs:
            self._spawn(run.id)
        return len(runs)

    async def decide(
        self, caller: Principal, run: Run, step: Step, approve: bool, reason: str | None
    ) -> Step:
        """Approve or reject a call awaiting approval, and let the run go on."""
        if not may_act_on(caller, run):
            raise Forbidden("only the run's owner or an administrator may decide")
        if step.status != "awaiting_approval":
            raise Conflict(f"step {step.id} is not awaiting approval (it is {step.status})")
        status: StepStatus = "approved" if approve else "rejected"
        facts = {**self._facts(run, step), "decision": status, "by": caller.user}
        decided = await asyncio.to_thread(
            self.journal.update_step, step, status, decided_by=caller.user, reason=reason,
            audit=audit_entry("approval", facts, got={"reason": reason}),
        )  # fmt: skip
        if decided is None:
            raise Conflict(f"step {step.id} was decided already")
        self._publish(run.id, {"type": "step", "step": decided.to_json()})
        resumed = await asyncio.to_thread(self.journal.set_status, run, "running")
        if resumed is not None:
            self._publish(run.id, {"type": "run", "run": resumed.to_json()})
            self._spawn(run.id)
        return decided

    async def cancel(self, caller: Principal, run: Run) -> Run:
        if not may_act_on(caller, run):
            raise Forbidden("only the run's owner or an administrator may cancel it")
        facts = {"run": run.id, "agent": run.definition.name, "by": caller.user}
        cancelled = await asyncio.to_thread(
            self.journal.set_status, run, "cancelled", audit=audit_entry("cancel", facts)
        )
        task = self.tasks.get(run.id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        current = (
            await asyncio.to_thread(self.journal.run, run.id) if cancelled is None else cancelled
        )
        self._publish(run.id, {"type": "run", "run": current.to_json()})
        return current

    async def stop_runs_of(self, agent_id: int) -> None:
        """Stop the tasks of the agent's runs: it is being deleted, and its runs with it."""
        runs = await asyncio.to_thread(self.journal.runs, None, agent_id, ["running"], 1_000_000)
        tasks = [task for run in runs if (task := self.tasks.get(run.id)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def events(self, run_id: int) -> AsyncIterator[Event]:
        """The run and its steps as they are now, then each change, until it stops or waits."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.listeners.setdefault(run_id, set()).add(queue)  # before the snapshot: no gap
        try:
            run = await asyncio.to_thread(self.journal.run, run_id)
            for step in await asyncio.to_thread(self.journal.steps, run_id):
                yield {"type": "step", "step": step.to_json()}
            yield {"type": "run", "run": run.to_json()}
            while run.status == "running":
                event = await queue.get()
                yield event
                if event["type"] == "run":
                    run = await asyncio.to_thread(self.journal.run, run_id)
        finally:
            self.listeners[run_id].discard(queue)
            if not self.listeners[run_id]:
                del self.listeners[run_id]

    async def close(self) -> None:
        """Stop the tasks (a server stopping): their runs stay running, to resume next start."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the loop -------------------------------------------------------------

    def _spawn(self, run_id: int) -> None:
        if run_id in self.tasks:
            # It may be on its way out (closing MCP sessions after it began to wait):
            # go again once it is done, or a decision made meanwhile would be lost.
            self.again.add(run_id)
            return
        task = asyncio.get_running_loop().create_task(self._drive(run_id))
        self.tasks[run_id] = task
        task.add_done_callback(lambda done: self._done(run_id, done))

    def _done(self, run_id: int, task: asyncio.Task[None]) -> None:
        del self.tasks[run_id]
        if run_id in self.again and not task.cancelled():
            self.again.discard(run_id)
            self._spawn(run_id)

    def _publish(self, run_id: int, event: Event) -> None:
        for queue in self.listeners.get(run_id, ()):
            queue.put_nowait(event)

    async def _finish(self, run: Run, status: RunStatus, **fields: Any) -> None:
        facts = {"run": run.id, "agent": run.definition.name, "status": status}
        done = await asyncio.to_thread(
            self.journal.set_status, run, status, audit=audit_entry("end", facts, got=fields),
            **fields,
        )  # fmt: skip
        if done is not None:
            self._publish(run.id, {"type": "run", "run": done.to_json()})

    async def _drive(self, run_id: int) -> None:
        run = await asyncio.to_thread(self.journal.run, run_id)
        try:
            async with self.toolbox.open(run.definition) as tools:
                while await self._advance(run_id, tools):
                    pass
        except asyncio.CancelledError:
            raise
        except BlackRoadError as exc:
            await self._finish(run, "failed", error=exc.message)
        except Exception as exc:
            log.exception("agent run %s failed", run_id)
            await self._finish(run, "failed", error=f"internal error: {type(exc).__name__}")

    async def _advance(self, run_id: int, tools: dict[str, Tool]) -> bool:
        """Do the next thing the journal calls for; False when the run stops or waits."""
        run = await asyncio.to_thread(self.journal.run, run_id)
        if run.status != "running":
            return False
        steps = await asyncio.to_thread(self.journal.steps, run_id)
        pending = pending_call(steps)
        if pending is not None:
            return await self._settle(run, tools, pending)
        models = sum(step.kind == "model" for step in steps)
        if models >= run.definition.max_steps:
            await self._finish(run, "step_limit")
            return False
        return await self._call_model(run, tools, steps, models)

    async def _call_model(
        self, run: Run, tools: dict[str, Tool], steps: list[Step], index: int
    ) -> bool:
        definition = run.definition
        specs = [
            tool_calling.tool(t.name, t.description, t.parameters, "tools") for t in tools.values()
        ]
        plan = tool_calling.plan(specs, definition.choice_at(index))
        owner = await asyncio.to_thread(self.owners, run.owner)
        model = await self.inference.resolve(definition.model, owner)
        sampling = {"max_tokens": definition.max_tokens, "temperature": definition.temperature,
                    "repeat_penalty": definition.repeat_penalty,
                    "json_schema": plan.schema()}  # fmt: skip
        params = self.inference.sampling(
            model, {k: v for k, v in sampling.items() if v is not None}
        )
        messages = self.inference.conversation(model, plan.offered(history(run, steps)))
        nodes: list[str] = []
        admission = await self._admitted(run, owner)
        started_at, began = datetime.now(UTC), time.perf_counter()
        tokens = 0
        try:
            stream = self.inference.generate(model, params, messages=messages, on_node=nodes.append)
            text, finish = await collect(stream)
            tokens = finish.prompt_tokens + finish.completion_tokens
        finally:
            if admission is not None:
                admission.finish(tokens)
        took = (time.perf_counter() - began) * 1000
        answer = plan.read(text, validate=False)  # _execute says what is wrong
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in answer.calls]
        output = {
            "content": answer.content,
            "calls": calls,
            "finish_reason": finish.reason,
            "prompt_tokens": finish.prompt_tokens,
            "completion_tokens": finish.completion_tokens,
        }
        offered_names = [t.name for t in plan.tools] if plan.active else []
        facts = {"run": run.id, "agent": definition.name, "user": run.owner, "model": model.name,
                 "prompt_tokens": finish.prompt_tokens,
                 "completion_tokens": finish.completion_tokens}  # fmt: skip
        step = await asyncio.to_thread(
            self.journal.add_step, run, "model", "completed", model.name, sent=offered_names,
            output=output, duration_ms=took, audit=audit_entry("model", facts, messages, output),
            usage=RequestRecord(
                created_at=started_at, method="AGENT", path=f"/api/agents/runs/{run.id}",
                model=model.name, user=run.owner, node=nodes[-1] if nodes else None, status=200,
                prompt_tokens=finish.prompt_tokens, completion_tokens=finish.completion_tokens,
                duration_ms=took,
            ),
        )  # fmt: skip
        self._publish(run.id, {"type": "step", "step": step.to_json()})
        if calls:
            return True
        if plan.mode == "required":  # a call was due, and the reply was cut short
            limit = f"max_tokens ({definition.max_tokens})"
            await self._finish(run, "failed", error=f"the model's call was cut short at {limit}")
        else:
            await self._finish(run, "succeeded", answer=answer.content or "")
        return False

    async def _admitted(self, run: Run, owner: Principal) -> Admission | None:
        """One model call admitted against the owner's limits, once they allow it.

        A rate or concurrency limit is waited out (the run is patient, and a
        cancel ends the wait); a used-up token budget raises and fails the run.
        """
        while True:
            try:
                return self.quotas.admit(owner)
            except RateLimited as exc:
                if exc.kind == "insufficient_quota":
                    raise
                log.info("agent run %s waits %ss: %s", run.id, exc.retry_after, exc.message)
                await asyncio.sleep(exc.retry_after)

    async def _settle(self, run: Run, tools: dict[str, Tool], pending: PendingCall) -> bool:
        call, step = pending.call, pending.step
        tool = tools.get(call["name"])
        if tool is None:  # an MCP server that is gone since the call was made
            await self._record(
                run, call, step, _result(f"The tool {call['name']} is not available.")
            )
            return True
        policy = run.definition.policy(tool.name, tool.needs_approval)
        if step is None and policy == "deny":
            await self._record(run, call, None, _result("The agent's policy refuses this tool."))
        elif step is None and policy == "ask":
            await self._await_approval(run, call)
            return False
        elif step is None or step.status == "approved":
            await self._execute(run, tool, call, step)
        elif step.status == "awaiting_approval":  # waiting since before a restart
            await self._finish_waiting(run)
            return False
        elif step.status == "rejected":
            why = f"A person ({step.decided_by}) refused this call" + (
                f": {step.reason}" if step.reason else "."
            )
            await self._record(run, call, step, _result(why))
        elif tool.side_effects:  # started, and a crash came before its result
            note = "Interrupted by a restart; not run again, since it may have had its effect."
            await self._record(run, call, step, _result(note))
        else:
            await self._execute(run, tool, call, step)
        return True

    async def _await_approval(self, run: Run, call: dict[str, Any]) -> None:
        facts = {**self._facts(run), "tool": call["name"], "call_id": call["id"]}
        step = await asyncio.to_thread(
            self.journal.add_step, run, "tool", "awaiting_approval", call["name"],
            call_id=call["id"], sent=call["arguments"],
            audit=audit_entry("approval_requested", facts, call["arguments"]),
        )  # fmt: skip
        self._publish(run.id, {"type": "step", "step": step.to_json()})
        await self._finish_waiting(run)

    async def _finish_waiting(self, run: Run) -> None:
        waiting = await asyncio.to_thread(self.journal.set_status, run, "awaiting_approval")
        if waiting is not None:
            self._publish(run.id, {"type": "run", "run": waiting.to_json()})

    async def _execute(self, run: Run, tool: Tool, call: dict[str, Any], step: Step | None) -> None:
        facts = {**self._facts(run), "tool": tool.name, "call_id": call["id"]}
        entry = audit_entry("tool_call", facts, call["arguments"])
        if step is None:
            step = await asyncio.to_thread(
                self.journal.add_step, run, "tool", "started", tool.name, call_id=call["id"],
                sent=call["arguments"], audit=entry,
            )  # fmt: skip
        else:  # approved, or started before a crash: a second execution, audited as such
            if step.status == "started":
                entry = audit_entry("tool_call", {**facts, "again": True}, call["arguments"])
            started = await asyncio.to_thread(
                self.journal.update_step, step, "started", audit=entry, expect=step.status
            )
            assert started is not None, "only this run's task moves its steps on"
            step = started
        self._publish(run.id, {"type": "step", "step": step.to_json()})
        context = self.toolbox.context_for(run)
        began = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                validated_call(tool, call["arguments"], context), TOOL_TIMEOUT_SECONDS
            )
        except ToolError as exc:
            result = ToolResult(exc.message, is_error=True)
        except TimeoutError:
            result = ToolResult(
                f"The tool took longer than {TOOL_TIMEOUT_SECONDS:.0f} s.", is_error=True
            )
        except BlackRoadError as exc:
            result = ToolResult(exc.message, is_error=True)
        took = (time.perf_counter() - began) * 1000
        await self._record(
            run, call, step, _result(result.content, result.data, result.is_error), took
        )

    async def _record(
        self,
        run: Run,
        call: dict[str, Any],
        step: Step | None,
        output: dict[str, Any],
        took: float | None = None,
    ) -> None:
        """A call's result, final: the step completed with it, and its audit record."""
        facts = {**self._facts(run), "tool": call["name"], "call_id": call["id"],
                 "is_error": output["is_error"]}  # fmt: skip
        entry = audit_entry("tool_result", facts, call["arguments"], output)
        if step is None:
            done = await asyncio.to_thread(
                self.journal.add_step, run, "tool", "completed", call["name"], call_id=call["id"],
                sent=call["arguments"], output=output, duration_ms=took, audit=entry,
            )  # fmt: skip
        else:
            settled = await asyncio.to_thread(
                self.journal.update_step, step, "completed", output=output, duration_ms=took,
                audit=entry,
            )  # fmt: skip
            assert settled is not None, "only this run's task moves its steps on"
            done = settled
        self._publish(run.id, {"type": "step", "step": done.to_json()})

    @staticmethod
    def _facts(run: Run, step: Step | None = None) -> dict[str, Any]:
        facts: dict[str, Any] = {"run": run.id, "agent": run.definition.name, "user": run.owner}
        if step is not None:
            facts.update(step=step.seq, tool=step.name, call_id=step.call_id)
        return facts
