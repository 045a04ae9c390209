"""The ``blackroad`` command, run as a real process."""

from __future__ import annotations

from pathlib import Path

import openai

from blackroad import __version__
from blackroad.models.bundled import bundled_models
from tests.conftest import SMOLLM2
from tests.support.server import Server, blackroad


def test_version(tmp_path: Path) -> None:
    result = blackroad("version", home=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"blackroad {__version__} (llama-cpp-python ")


def test_models_table_lists_bundled_models_with_metadata(tmp_path: Path) -> None:
    result = blackroad("models", home=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "268.10M" in rows["gemma3:270m"] and "Q4_K_M" in rows["gemma3:270m"]
    assert "134.52M" in rows[SMOLLM2] and "Q4_1" in rows[SMOLLM2] and "8192" in rows[SMOLLM2]


def test_models_add_and_drop_in_appear_in_the_running_server(server: Server) -> None:
    gguf = bundled_models()[SMOLLM2]
    added = blackroad("models", "add", str(gguf), "--name", "team/assistant:v1", home=server.home)
    assert added.returncode == 0, added.stderr
    assert "team/assistant:v1" in added.stdout
    (server.home / "models" / "Dropped-Model.Q4.gguf").symlink_to(gguf)

    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"team/assistant:v1", "dropped-model.q4:latest"} <= ids
    reply = client.chat.completions.create(
        model="team/assistant:v1", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.model == "team/assistant:v1"
    assert client.models.retrieve("dropped-model.q4").id == "dropped-model.q4:latest"


def test_models_add_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("not a model")
    result = blackroad("models", "add", str(bogus), home=tmp_path)
    assert result.returncode == 1
    assert "not a readable GGUF file" in result.stdout


def test_run_with_a_prompt_streams_the_reply(server: Server) -> None:
    result = blackroad("run", SMOLLM2, "What is 2+2?", home=server.home, port=server.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_run_interactive_chat_until_bye(server: Server) -> None:
    result = blackroad(
        "run", SMOLLM2, home=server.home, port=server.port, stdin="Hello\nAnd again\n/bye\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(">>> ") == 3


LONG_LINE = "Tell me a story about the sea and the ships on it. " * 16  # ~200 tokens


def test_run_drops_the_oldest_exchanges_when_the_chat_outgrows_the_context(
    small_context: Server,
) -> None:
    # Three ~200-token messages cannot all fit 512 tokens: by the third the first must go.
    chat = f"{LONG_LINE}\n{LONG_LINE}\n{LONG_LINE}\n/bye\n"
    result = blackroad("run", SMOLLM2, home=small_context.home, port=small_context.port,
                       stdin=chat)  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert result.stdout.count(">>> ") == 4
    assert "the oldest exchange was dropped to fit the model's context" in result.stdout


def test_run_with_a_prompt_longer_than_the_context_says_so(small_context: Server) -> None:
    result = blackroad("run", SMOLLM2, LONG_LINE * 3, home=small_context.home,
                       port=small_context.port)  # fmt: skip
    assert result.returncode == 1
    assert "this model's context is 512 tokens, but the prompt has" in result.stdout


def test_run_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    result = blackroad("run", SMOLLM2, "hi", home=tmp_path, port=1)
    assert result.returncode == 1
    assert "blackroad up" in result.stdout
