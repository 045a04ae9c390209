"""A chat longer than the context: Ollama's /api/chat and stored conversations keep its newest
messages; a chat the client sent to /v1 is refused.

On a server whose models have 512 tokens of context, with the official clients.
"""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.conftest import SMOLLM2
from tests.support.server import Server

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
TOPICS = ("rivers", "mountains", "forests", "deserts", "oceans", "glaciers")
# Six exchanges of ~130 tokens each and a last question: far more than 512 tokens.
HISTORY = [
    turn
    for topic in TOPICS
    for turn in (
        {"role": "user", "content": f"Tell me everything about {topic}. " * 12},
        {"role": "assistant", "content": f"There is a lot to say about {topic}. " * 12},
    )
]
LAST = {"role": "user", "content": "Which of these did I ask about first?"}
ONE_TOKEN: dict[str, Any] = {"num_predict": 1, "temperature": 0}


@pytest.fixture
def chat(small_context: Server) -> ollama.Client:
    return ollama.Client(host=small_context.url)


def _prompt_tokens(client: ollama.Client, messages: list[dict[str, str]]) -> int:
    reply = client.chat(model=SMOLLM2, messages=messages, options=ONE_TOKEN)
    assert reply.prompt_eval_count is not None
    return reply.prompt_eval_count


def test_a_chat_too_long_keeps_its_system_message_and_newest_turns(chat: ollama.Client) -> None:
    truncated = _prompt_tokens(chat, [SYSTEM, *HISTORY, LAST])
    # The prompt of the system message with each run of the newest turns that fits.
    fitting = {}
    for start in range(len(HISTORY), -1, -1):
        tokens = _prompt_tokens(chat, [SYSTEM, *HISTORY[start:], LAST])
        if tokens + ONE_TOKEN["num_predict"] > 512:
            break
        fitting[start] = tokens
    assert len(fitting) > 1  # some history fits, not all of it
    assert truncated == fitting[min(fitting)]  # exactly the longest run of newest turns


def test_truncate_false_refuses_a_chat_too_long(small_context: Server) -> None:
    # Ollama's request field; its Python client does not send it, so raw HTTP.
    body = {"model": SMOLLM2, "messages": [SYSTEM, *HISTORY, LAST], "options": ONE_TOKEN,
            "stream": False, "truncate": False}  # fmt: skip
    refused = httpx.post(small_context.url + "/api/chat", json=body, timeout=60)
    assert refused.status_code == 400
    assert "this model's context is 512 tokens, but the prompt has" in refused.json()["error"]


def test_a_last_message_too_long_alone_is_refused(chat: ollama.Client) -> None:
    huge = {"role": "user", "content": "Tell me everything about rivers. " * 120}
    with pytest.raises(ollama.ResponseError) as refused:
        chat.chat(model=SMOLLM2, messages=[SYSTEM, *HISTORY, huge], options=ONE_TOKEN)
    assert refused.value.status_code == 400


def test_the_openai_api_refuses_a_chat_too_long(small_context: Server) -> None:
    client = openai.OpenAI(base_url=small_context.v1, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=SMOLLM2, messages=[SYSTEM, *HISTORY, LAST],  # type: ignore[list-item]
                                       max_tokens=1)  # fmt: skip
    assert refused.value.code == "context_length_exceeded"


def test_a_stored_conversation_goes_on_past_the_context(small_context: Server) -> None:
    client = openai.OpenAI(base_url=small_context.v1, api_key="unused", max_retries=0)
    conversation: int | str = "new"
    for topic in TOPICS[:4]:  # ~4 x (130 + 32) tokens of history by the last turn
        reply = client.chat.completions.create(
            model=SMOLLM2, messages=[{"role": "user", "content": f"Tell me about {topic}. " * 24}],
            max_tokens=32, extra_body={"blackroad": {"conversation": conversation}},
        )  # fmt: skip
        conversation = (reply.model_extra or {})["blackroad"]["conversation"]
        assert reply.usage is not None and reply.usage.prompt_tokens + 32 <= 512
    stored = httpx.get(f"{small_context.url}/api/conversations/{conversation}", timeout=30).json()
    assert len(stored["messages"]) == 8  # the server keeps all of it; the model saw what fit
