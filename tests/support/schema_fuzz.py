"""schemathesis over a real server: the hooks and the check its runs share.

Imported by ``tests/api/test_schema_fuzz.py`` and, for the long campaigns, by the
schemathesis CLI (``SCHEMATHESIS_HOOKS=tests.support.schema_fuzz``); see
``fuzz/README.md``. Generated cases stay bounded in time without leaving any
route out: an inference request's model is sometimes a real bundled one (random
names only reach the 404), and its output length is capped at a few tokens
(random or absent ``max_tokens``/``num_predict`` would decode for minutes). Every other
field, the prompts, formats, templates and options included, stays as generated.
After each case the server must still answer ``/health/live``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import schemathesis
from hypothesis import strategies as st

SMOLLM2 = "smollm2:135m"
MINILM = "all-minilm:l6-v2"
# The routes that run a model named in the body, and the models they may be given.
INFERENCE = {
    "/v1/chat/completions": SMOLLM2,
    "/v1/completions": SMOLLM2,
    "/api/generate": SMOLLM2,
    "/api/chat": SMOLLM2,
    "/api/show": SMOLLM2,
    "/v1/embeddings": MINILM,
    "/api/embed": MINILM,
    "/api/embeddings": MINILM,
}
GENERATING = {"/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat"}
MAX_OUTPUT_TOKENS = 4
_OUTPUT_FIELDS = {"max_tokens", "max_completion_tokens"}
# How long a server on a loaded 2-core machine may take to say it is alive.
LIVE_TIMEOUT = 60.0


def capped(value: Any) -> Any:
    """An output length of at most ``MAX_OUTPUT_TOKENS``; values of other types as they are
    (the server refuses them), but null, which means the server's default: the whole context."""
    if value is None:
        return MAX_OUTPUT_TOKENS
    if isinstance(value, int) and not isinstance(value, bool):
        return MAX_OUTPUT_TOKENS if value < 0 or value > MAX_OUTPUT_TOKENS else value
    return value


def bounded(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its output length capped (OpenAI's fields and Ollama's ``options``);
    where it sets none, the cap is added: the server's default is the whole context."""
    body = {k: capped(v) if k in _OUTPUT_FIELDS else v for k, v in body.items()}
    if path.startswith("/v1/") and not _OUTPUT_FIELDS & body.keys():
        body["max_tokens"] = MAX_OUTPUT_TOKENS
    options = body.get("options")
    if options is None:  # "options": null means none given: the server's default, unbounded
        options = {}
    if path.startswith("/api/") and isinstance(options, dict):
        body["options"] = {**options, "num_predict": capped(options.get("num_predict", -1))}
    return body


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    operation = context.operation
    path = operation.path if operation is not None else ""
    if path not in INFERENCE or not isinstance(body, dict):
        return st.just(body)
    real = {**body, "model": INFERENCE[path]}
    real.pop("name", None)  # Ollama's older spelling of "model" would be refused beside it
    return st.sampled_from([body, real])


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]
) -> None:
    # Here rather than in flatmap_body: the coverage phase's cases bypass the strategies.
    if case.operation.path in GENERATING and isinstance(case.body, dict):
        case.body = bounded(case.operation.path, case.body)


@schemathesis.check
def server_alive(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """The server still answers its liveness probe after the case."""
    parts = urlsplit(str(response.request.url))
    live = httpx.get(f"{parts.scheme}://{parts.netloc}/health/live", timeout=LIVE_TIMEOUT)
    if live.status_code != 200:
        raise AssertionError(f"/health/live answered {live.status_code} after this case")
    return None
