"""A stand-in for vLLM, which cannot run here: a real HTTP server speaking its OpenAI protocol.

    python -m tests.support.fake_vllm --port 8000 --model smollm2:135m [--api-key K]

It serves ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``
(JSON, or Server-Sent Events with ``stream_options.include_usage``),
``/v1/embeddings`` and ``/health``, with vLLM's error objects
(``{"object": "error", "message", "type", "code"}``) and its
``continue_final_message`` extension. The text is not a model's: it counts
words (``w1 w2 ...``), one per token, ``--token-ms`` apart, so a test can
tell exactly what a stream delivered and that nothing was lost or repeated.
With ``--reply TEXT`` every chat answer is TEXT instead, in one piece: a
model whose answer someone else wrote (a prompt injection), e.g. a tool call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS_BY_DEFAULT = 16


def error(status: int, message: str) -> JSONResponse:
    kinds = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError"}
    body = {"object": "error", "message": message, "type": kinds.get(status, "Error"),
            "param": None, "code": status}  # fmt: skip
    return JSONResponse(body, status_code=status)


def words_after(text: str) -> int:
    """How many counted words ``text`` ends with (a continuation goes on from there)."""
    count = 0
    for word in text.split():
        if word == f"w{count + 1}":
            count += 1
    return count


def create_app(
    model: str,
    api_key: str | None,
    token_seconds: float,
    log_requests: bool = False,
    reply: str | None = None,
) -> Starlette:
    async def checked(request: Request) -> dict[str, Any] | JSONResponse:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "Unauthorized")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the body is not a JSON object")
        if body.get("model") != model:
            return error(404, f"The model `{body.get('model')}` does not exist.")
        if log_requests:  # so a test can tell which node a request (or a conversation) reached
            opening = (body.get("messages") or [{}])[0].get("content")
            print(f"request {request.url.path} {json.dumps(opening)}", flush=True)
        return body

    async def models(request: Request) -> Response:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "Unauthorized")
        return JSONResponse(
            {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "vllm"}]}
        )

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def generate(request: Request, chat: bool) -> Response:
        body = await checked(request)
        if isinstance(body, JSONResponse):
            return body
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return error(400, "messages must be a non-empty list")
            start = 0
            if body.get("continue_final_message"):
                if messages[-1].get("role") != "assistant":
                    return error(400, "continue_final_message needs a final assistant message")
                start = words_after(str(messages[-1].get("content") or ""))
            prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in messages)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return error(400, "prompt must be a string")
            start = words_after(prompt)
            prompt_tokens = len(prompt.split()) + 1
        limit = body.get("max_tokens") or WORDS_BY_DEFAULT
        pieces = [f"{' ' if start + i else ''}w{start + i + 1}" for i in range(limit)]
        if chat and reply is not None:
            limit, pieces = 1, [reply]
        reason = "length" if body.get("max_tokens") else "stop"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": limit,
                 "total_tokens": prompt_tokens + limit}  # fmt: skip
        ident, created = f"cmpl-{time.time_ns()}", int(time.time())
        kind = "chat.completion" if chat else "text_completion"

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish}

        if not body.get("stream"):
            await asyncio.sleep(token_seconds * limit)
            text = "".join(pieces)
            answer = (
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": reason}
                if chat else {"index": 0, "text": text, "finish_reason": reason}
            )  # fmt: skip
            return JSONResponse({"id": ident, "object": kind, "created": created,
                                 "model": model, "choices": [answer], "usage": usage})  # fmt: skip

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], with_usage: bool = False) -> str:
            payload = {"id": ident, "object": chunk_kind, "created": created, "model": model,
                       "choices": choices}  # fmt: skip
            if with_usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            for piece in pieces:
                await asyncio.sleep(token_seconds)
                yield event([choice(piece, None)])
            yield event([choice("", reason)])
            if include_usage:
                yield event([], with_usage=True)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    async def embeddings(request: Request) -> Response:
        body = await checked(request)
        if isinstance(body, JSONResponse):
            return body
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts:
            return error(400, "input must be a string or a non-empty list")
        data = [
            {"object": "embedding", "index": i, "embedding": [1.0, 0.0, float(len(str(t)))]}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(str(t).split()) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--token-ms", type=float, default=5.0)
    parser.add_argument("--log-requests", action="store_true")
    parser.add_argument("--reply")
    args = parser.parse_args()
    app = create_app(args.model, args.api_key, args.token_ms / 1000, args.log_requests, args.reply)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
