"""The Agents app against smollm2:135m: an agent made in the UI, a run that waits for approval
with the tool's input on its timeline, approved (the call runs) or rejected (it does not).

The agent's first step must call write_file (``tool_choice``), a side-effecting tool, so every
run pauses for a person whatever the 135M model would rather do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.conftest import SMOLLM2
from tests.support.agents import Agents as AgentsClient
from tests.support.agents import sandbox_of
from tests.support.server import Server
from tests.web.app_checks import Scheme, check_app, fits_a_phone, page_errors
from tests.web.conftest import USER, Desk, open_app

RUN_TIMEOUT = 120_000  # ms: a model step on a shared CPU


def create_scribe(page: Page, name: str) -> None:
    """A new agent from the form: write_file, called first, at temperature 0, one step."""
    open_app(page, "Agents")
    form = page.get_by_role("form", name="New agent")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Model").select_option(SMOLLM2)
    form.get_by_label("write_file", exact=True).check()
    form.get_by_label("Tool choice of the first steps").fill("write_file")
    form.get_by_label("Temperature").fill("0")
    form.get_by_label("Max steps").fill("1")
    form.get_by_role("button", name="Create agent").click()
    expect(page.get_by_role("dialog", name=f"Agents — {name}")).to_be_visible()


def start_run(page: Page, task: str) -> Locator:
    """Start a run of the open agent; its tool step, once it waits for approval."""
    page.get_by_role("form", name="Start a run").get_by_label("Task").fill(task)
    page.get_by_role("button", name="Start run").click()
    tool = page.get_by_role("list", name="Steps").locator(".agents-step.tool")
    expect(tool).to_have_attribute("data-status", "awaiting_approval", timeout=RUN_TIMEOUT)
    return tool


def tool_step(page: Page, run_id: str) -> dict[str, Any]:
    """The run's tool step as the server holds it, asked with the page's own cookie."""
    run = page.request.get(f"/api/agents/runs/{run_id}").json()
    [step] = [s for s in run["steps"] if s["kind"] == "tool"]
    found: dict[str, Any] = step
    return found


def written(desk: Desk, page: Page, run_id: str, step: dict[str, Any]) -> Path:
    """Where the run's write_file call writes: its agent's sandbox on the server."""
    agent = page.request.get(f"/api/agents/runs/{run_id}").json()["agent_id"]
    return sandbox_of(desk.server.home, agent) / str(step["input"]["path"])


def test_an_agent_made_in_the_ui_waits_for_approval_and_approving_runs_the_call(
    desk: Desk,
) -> None:
    page = desk.logged_in(USER)
    errors = page_errors(page)
    create_scribe(page, "scribe")
    tool = start_run(page, "Write a note saying the backup finished.")
    # The timeline shows what the model asked the tool to do, before anything ran.
    expect(tool.locator("h4")).to_have_text("2. Tool write_file")
    tool_input = tool.locator("pre.agents-io").first
    expect(tool_input).to_contain_text('"path"')
    expect(tool_input).to_contain_text('"content"')
    run_id = page.evaluate("location.hash").split("=run-")[1]
    sidebar = page.get_by_role("list", name="Pending approvals")
    expect(sidebar.get_by_role("button", name=f"write_file in run {run_id}")).to_be_visible()
    page.get_by_role("group", name="Decision on write_file").get_by_role(
        "button", name="Approve"
    ).click()
    expect(page.locator(".agents-finished")).to_have_text(
        "The run stopped at its step limit.", timeout=RUN_TIMEOUT
    )
    expect(tool).to_have_attribute("data-status", "completed")
    expect(tool).to_contain_text(f"Decided by {USER}")
    expect(tool.get_by_text("Output", exact=True)).to_be_visible()
    step = tool_step(page, run_id)
    assert step["status"] == "completed" and not step["output"]["is_error"], step
    expect(tool.locator("pre.agents-io").last).to_have_text(step["output"]["content"])
    assert written(desk, page, run_id, step).read_text() == step["input"]["content"]
    expect(sidebar.get_by_text("Nothing waits for you.")).to_be_visible()
    # A reload reopens the run from the hash, as the server holds it.
    page.reload()
    expect(page.locator(".agents-finished")).to_have_text("The run stopped at its step limit.")
    assert errors == []


def test_a_rejected_call_does_not_run_and_the_reason_is_kept(desk: Desk) -> None:
    page = desk.logged_in(USER)
    errors = page_errors(page)
    create_scribe(page, "careful-scribe")
    tool = start_run(page, "Write a note saying the backup finished.")
    decision = page.get_by_role("group", name="Decision on write_file")
    decision.get_by_label("Reason").fill("no notes today")
    decision.get_by_role("button", name="Reject").click()
    expect(page.locator(".agents-finished")).to_be_visible(timeout=RUN_TIMEOUT)
    # The refusal is the call's result, which the model is given; the tool never ran.
    expect(tool).to_contain_text(f"Decided by {USER}: no notes today")
    expect(tool.get_by_text("Output (an error)")).to_be_visible()
    expect(tool.locator("pre.agents-io.failed")).to_contain_text(
        f"A person ({USER}) refused this call: no notes today"
    )
    run_id = page.evaluate("location.hash").split("=run-")[1]
    step = tool_step(page, run_id)
    assert step["output"]["is_error"] and step["decided_by"] == USER
    assert not written(desk, page, run_id, step).exists()
    assert errors == []


@pytest.fixture(scope="module")
def waiting_run(desk_server: Server, session_key: Callable[[Server, str], str]) -> int:
    """A run of the user's, made through the API, waiting for approval of its write_file call."""
    with AgentsClient(desk_server.url, session_key(desk_server, USER)) as agents:
        agent = agents.create(name="shown-scribe", tools=["write_file"], tool_choice=["write_file"],
                              max_steps=1)  # fmt: skip
        run = agents.run(agent, "Write a note saying the backup finished.")
        agents.wait(run["id"], "awaiting_approval")
    run_id: int = run["id"]
    return run_id


def test_a_call_that_begins_to_wait_elsewhere_appears_without_a_reload(
    desk: Desk, desk_server: Server, session_key: Callable[[Server, str], str]
) -> None:
    page = desk.logged_in(USER)
    open_app(page, "Agents")
    pending = page.get_by_role("list", name="Pending approvals")
    expect(pending.locator(".agents-item").first.or_(pending.get_by_text("Nothing waits"))
           ).to_be_visible()  # fmt: skip
    before = pending.locator(".agents-item").count()
    with AgentsClient(desk_server.url, session_key(desk_server, USER)) as agents:
        agent = agents.create(name="elsewhere-scribe", tools=["write_file"],
                              tool_choice=["write_file"], max_steps=1)  # fmt: skip
        run = agents.run(agent, "Write a note saying the backup finished.")
        agents.wait(run["id"], "awaiting_approval")
        expect(pending.get_by_role("button", name=f"write_file in run {run['id']}")).to_be_visible(
            timeout=15_000
        )
        expect(pending.locator(".agents-item")).to_have_count(before + 1)
        agents.http.post(f"/api/agents/runs/{run['id']}/cancel")


def test_at_phone_width_the_window_fills_the_screen(desk: Desk, waiting_run: int) -> None:
    page = desk.logged_in(USER, width=390, height=800)
    page.goto(f"/#agents=run-{waiting_run}")
    page.reload()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    fits_a_phone(page, "Agents")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_with_screenshots(desk: Desk, waiting_run: int, scheme: Scheme) -> None:
    page = desk.logged_in(USER, color_scheme=scheme, bypass_csp=True)
    page.goto(f"/#agents=run-{waiting_run}")
    page.reload()  # what the URL names is opened on load
    approvable = page.get_by_role("button", name="Approve")
    check_app(page, "Agents", "agents", scheme, lambda _: expect(approvable).to_be_visible())


def test_a_waiting_run_is_cancelled_and_leaves_nothing_to_decide(
    desk: Desk, waiting_run: int
) -> None:
    """Last in the module: it ends the run the tests above show."""
    page = desk.logged_in(USER)
    errors = page_errors(page)
    page.goto(f"/#agents=run-{waiting_run}")
    page.reload()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".agents-finished")).to_have_text("The run cancelled.")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    pending = page.get_by_role("list", name="Pending approvals")
    expect(pending.get_by_text("Nothing waits for you.")).to_be_visible()
    assert page.request.get(f"/api/agents/runs/{waiting_run}").json()["status"] == "cancelled"
    assert errors == []
