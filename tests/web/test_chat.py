"""The Chat app against smollm2:135m: streaming and stopping, conversations, cited knowledge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server
from tests.web.conftest import ADMIN, USER, Desk, open_app

FACT = "The wombat registry of Lisbon is kept by Marta Quintela in room 7 of the old mill."


def chat(desk: Desk, user: str) -> Page:
    page = desk.logged_in(user)
    open_app(page, "Chat")
    page.get_by_label("Model").select_option(SMOLLM2)
    return page


def ask(page: Page, question: str, max_tokens: int) -> None:
    page.get_by_label("Max tokens").fill(str(max_tokens))
    page.get_by_role("textbox", name="Message").fill(question)
    page.get_by_role("button", name="Send").click()


def conversation(page: Page) -> dict[str, Any]:
    """The open conversation as the server holds it, asked with the page's own cookie."""
    state = page.evaluate("location.hash")
    assert state.startswith("#chat="), state
    answer = page.request.get(f"/api/conversations/{state.removeprefix('#chat=')}")
    assert answer.ok, answer.text()
    found: dict[str, Any] = answer.json()
    return found


def shows(page: Page, answer: str) -> None:
    """The page shows the one assistant message ``answer``, rendered as Markdown.

    The expected text is ``answer`` rendered by the desktop's own Markdown module
    into a detached node: a model's ``*aside*`` is shown as emphasis, not as
    asterisks.
    """
    expected = page.evaluate(
        """async (text) => {
            const { renderMarkdown } = await import("/desktop/markdown.js");
            const node = document.createElement("div");
            await renderMarkdown(node, text);
            return node.textContent;
        }""",
        answer,
    )
    expect(page.locator(".message.assistant .message-content")).to_have_text(expected)


def finished_answers(page: Page, count: int) -> None:
    expect(page.locator(".message.assistant:not([aria-busy])")).to_have_count(
        count, timeout=120_000
    )


def test_an_answer_streams_and_stops(desk: Desk) -> None:
    page = chat(desk, USER)
    ask(page, "Count from 1 to 1000, one number per line.", 2000)
    answer = page.locator(".message.assistant .message-content")
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    expect(answer).not_to_have_text("", timeout=120_000)  # tokens arrive while it runs
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".message.assistant .message-status")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    # The server never finished the answer: a conversation keeps only finished turns.
    assert conversation(page)["messages"] == []


def test_a_conversation_is_listed_searched_and_survives_a_reload(desk: Desk) -> None:
    page = chat(desk, USER)
    ask(page, "Say hello to the quokka keeper.", 12)
    finished_answers(page, 1)
    kept = conversation(page)
    assert [m["role"] for m in kept["messages"]] == ["user", "assistant"]
    shows(page, kept["messages"][1]["content"])
    sidebar = page.get_by_role("navigation", name="Conversations")
    expect(sidebar.get_by_role("button", name=kept["title"], exact=True)).to_be_visible()
    page.reload()
    expect(page.get_by_role("dialog", name=f"Chat — {kept['title']}")).to_be_visible()
    expect(page.locator(".message.user")).to_have_text("You" + kept["messages"][0]["content"])
    shows(page, kept["messages"][1]["content"])
    # Regenerate asks the last question again: the new answer replaces the old one,
    # on the page and in the conversation the server keeps.
    page.get_by_role("button", name="Regenerate").click()
    finished_answers(page, 1)
    expect(page.locator(".message.user")).to_have_count(1)
    again = conversation(page)["messages"]
    assert [m["role"] for m in again] == ["user", "assistant"]
    assert again[1]["created_at"] > kept["messages"][1]["created_at"]
    shows(page, again[1]["content"])
    # The server searches: the word is found, a word never said is not.
    search = page.get_by_role("searchbox", name="Search conversations")
    search.fill("quokka")
    expect(sidebar.locator(".chat-item")).to_have_count(1)
    search.fill("zyzzyvaunseen")
    expect(sidebar.get_by_text("No conversation matches.")).to_be_visible()


def test_an_answer_from_a_knowledge_base_cites_its_passage(
    desk: Desk, session_key: Callable[[Server, str], str]
) -> None:
    server = desk.server
    headers = {"Authorization": f"Bearer {session_key(server, ADMIN)}"}
    base = httpx.post(
        f"{server.url}/api/kb", json={"name": "mill-records"}, headers=headers, timeout=HTTP_TIMEOUT
    )
    assert base.status_code == 201, base.text
    uploaded = httpx.post(
        f"{server.url}/api/kb/{base.json()['id']}/documents",
        files={"files": ("registry.txt", FACT.encode())},
        headers=headers,
        timeout=120,
    )
    assert uploaded.status_code == 200, uploaded.text
    page = chat(desk, ADMIN)
    page.get_by_text("Knowledge: none").click()
    page.get_by_label("mill-records").check()
    expect(page.get_by_text("Knowledge: mill-records")).to_be_visible()
    ask(page, "Who keeps the wombat registry of Lisbon?", 24)
    finished_answers(page, 1)
    citation = page.get_by_role("list", name="Sources").get_by_role("button")
    expect(citation).to_have_text("[1] registry.txt")
    citation.click()
    source = page.get_by_role("complementary", name="registry.txt")
    expect(source.locator("blockquote")).to_have_text(FACT)
    expect(source).to_contain_text(f"characters 0–{len(FACT)}")
    # The stored answer keeps its citations: they are there after a reload too.
    assert conversation(page)["messages"][1]["citations"][0]["quote"] == FACT
    page.reload()
    expect(page.get_by_role("list", name="Sources").get_by_role("button")).to_have_text(
        "[1] registry.txt"
    )
