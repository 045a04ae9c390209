"""Chats that name a stored conversation or ask for memories, through both APIs' clients."""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama
import openai

from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server


def test_a_conversation_is_started_continued_and_kept(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused")
    first = client.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "My badger is called Ortwin."}],
        max_tokens=8,
        temperature=0,
        extra_body={"blackroad": {"conversation": "new"}},
    )
    conversation = (first.model_extra or {})["blackroad"]["conversation"]
    # Only the new turn is sent: the server puts the stored thread before it.
    stream = client.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "What is my badger called?"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"blackroad": {"conversation": conversation}},
    )
    chunks = list(stream)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None
    # The second prompt holds the first turn: it is longer than the new turn alone.
    assert usage.prompt_tokens > (first.usage.prompt_tokens if first.usage else 0)
    stored = httpx.get(f"{server.url}/api/conversations/{conversation}", timeout=30).json()
    roles = [(m["role"], m["content"]) for m in stored["messages"]]
    assert roles == [
        ("user", "My badger is called Ortwin."),
        ("assistant", first.choices[0].message.content),
        ("user", "What is my badger called?"),
        ("assistant", answer),
    ]
    last = stored["messages"][-1]
    assert last["model"] == SMOLLM2 and last["completion_tokens"] == usage.completion_tokens
    assert last["duration_ms"] > 0


def test_ollama_chat_recalls_memories_and_appends(server: Server) -> None:
    remembered = httpx.post(
        f"{server.url}/api/memories",
        json={"text": "The user is allergic to penicillin."},
        timeout=HTTP_TIMEOUT,
    )
    assert remembered.status_code == 201, remembered.text
    httpx.post(
        f"{server.url}/api/memories",
        json={"text": "The user's car is a red Volvo."},
        timeout=HTTP_TIMEOUT,
    )
    body = {
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Which antibiotic must I avoid?"}],
        "options": {"num_predict": 8, "temperature": 0},
        "blackroad": {"memory": True, "memory_k": 1, "conversation": "new"},
    }
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=120) as answer:
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    extension = lines[-1]["blackroad"]
    assert [m["id"] for m in extension["memories"]] == [remembered.json()["id"]]
    stored = httpx.get(
        f"{server.url}/api/conversations/{extension['conversation']}", timeout=HTTP_TIMEOUT
    ).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    # What is stored is what the user wrote, not the prompt with memories put in.
    assert stored["messages"][0]["content"] == "Which antibiotic must I avoid?"


def test_another_users_or_a_missing_conversation_is_404(server: Server) -> None:
    for protocol, path in (("openai", "/v1/chat/completions"), ("ollama", "/api/chat")):
        answer = httpx.post(
            server.url + path,
            json={
                "model": SMOLLM2,
                "stream": False,
                "messages": [{"role": "user", "content": "hi"}],
                "blackroad": {"conversation": 987654},
            },
            timeout=60,
        )
        assert answer.status_code == 404, (protocol, answer.text)


def test_regenerate_replaces_the_last_question_and_its_answer(server: Server) -> None:
    client = ollama.Client(host=server.url)

    def ask(question: str, conversation: int | str, regenerate: bool = False) -> Any:
        extension = {"conversation": conversation, "regenerate": regenerate}
        body = {
            "model": SMOLLM2,
            "stream": False,
            "options": {"num_predict": 8, "seed": 7},
            "messages": [{"role": "user", "content": question}],
            "blackroad": extension,
        }
        answer = httpx.post(server.url + "/api/chat", json=body, timeout=120)  # fmt: skip
        assert answer.status_code == 200, answer.text
        return answer.json()

    first = ask("Name a colour.", "new")
    conversation = first["blackroad"]["conversation"]
    second = ask("Name a fruit.", conversation)
    again = ask("Name a fruit.", conversation, regenerate=True)
    # The model read what came before the question, not the answer it replaces.
    assert again["prompt_eval_count"] == second["prompt_eval_count"]
    edited = ask("Name a tree.", conversation, regenerate=True)  # an edited last question
    stored = httpx.get(f"{server.url}/api/conversations/{conversation}", timeout=30).json()
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", "Name a colour."),
        ("assistant", first["message"]["content"]),
        ("user", "Name a tree."),
        ("assistant", edited["message"]["content"]),
    ]
    assert client.list()  # the server serves on


def test_regenerate_needs_a_stored_conversation_with_a_question(server: Server) -> None:
    body: dict[str, Any] = {"model": SMOLLM2, "stream": False,
                            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    for conversation in ("new", None):
        extension = {"conversation": conversation, "regenerate": True}
        refused = httpx.post(server.url + "/v1/chat/completions",
                             json={**body, "blackroad": extension}, timeout=60)  # fmt: skip
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "blackroad.regenerate"
    empty = httpx.post(server.url + "/api/conversations", json={}, timeout=30).json()["id"]
    extension = {"conversation": empty, "regenerate": True}
    refused = httpx.post(server.url + "/api/chat", json={**body, "blackroad": extension},
                         timeout=60)  # fmt: skip
    assert refused.status_code == 400
    assert "has no question to answer again" in refused.json()["error"]
