"""Chat prompts, pinned to the exact text each bundled model expects."""

from __future__ import annotations

import pytest

from blackroad.errors import InvalidRequest
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.templates import ChatTemplate
from tests.conftest import GEMMA3, SMOLLM2

USER_ONLY = [{"role": "user", "content": "Hello"}]
WITH_SYSTEM = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Bye"},
]


def template_of(model: str) -> ChatTemplate:
    return ChatTemplate.for_model(read_metadata(bundled_models()[model]))


def test_gemma3_uses_the_builtin_gemma_template() -> None:
    template = template_of(GEMMA3)
    assert template.name == "gemma"
    assert template.render(USER_ONLY) == (
        "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
    )


def test_gemma3_puts_the_system_message_before_the_first_user_turn() -> None:
    assert template_of(GEMMA3).render(WITH_SYSTEM) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_smollm2_uses_its_own_gguf_template_with_its_default_system_prompt() -> None:
    template = template_of(SMOLLM2)
    assert template.name == "gguf"
    assert template.render(USER_ONLY) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_smollm2_with_a_system_message() -> None:
    assert template_of(SMOLLM2).render(WITH_SYSTEM) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_without_generation_prompt() -> None:
    rendered = template_of(SMOLLM2).render(USER_ONLY, add_generation_prompt=False)
    assert rendered.endswith("<|im_start|>user\nHello<|im_end|>\n")


def test_templates_run_sandboxed() -> None:
    hostile = ChatTemplate("gguf", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "", "")
    with pytest.raises(InvalidRequest, match="chat template"):
        hostile.render(USER_ONLY)


def test_raise_exception_in_a_template_is_a_bad_request() -> None:
    strict = ChatTemplate("gguf", "{{ raise_exception('roles must alternate') }}", "", "")
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        strict.render(USER_ONLY)


@pytest.mark.parametrize(
    ("model", "opening"),
    [(SMOLLM2, "<|im_start|>assistant\n"), (GEMMA3, "<start_of_turn>model\n")],
)
def test_a_final_assistant_message_is_continued_not_closed(model: str, opening: str) -> None:
    template = template_of(model)
    partial = [*USER_ONLY, {"role": "assistant", "content": "Hello! How"}]
    assert template.render(partial, continue_final=True) == template.render(USER_ONLY) + (
        "Hello! How"
    )
    assert template.render(USER_ONLY).endswith(opening)
    with pytest.raises(InvalidRequest, match="assistant"):
        template.render(USER_ONLY, continue_final=True)
