"""The embedded engine: llama.cpp in this process, through llama-cpp-python.

llama.cpp calls block, so every call on the model runs in a single worker
thread per model (a ``Llama`` object is not thread-safe) and the event loop
only moves text. Each job holds the model's ``FairQueue`` slot until the
worker has really finished, even when the client has gone: the slot is
released by the job's completion, never by the request that started it.

Cancellation: closing a stream sets an event the worker checks before every
token, so a client that disconnects stops generation within one token.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from blackroad.engines.base import (
    Chunk,
    Embeddings,
    Engine,
    EngineHealth,
    Finish,
    FinishReason,
    Message,
    SamplingParams,
)
from blackroad.engines.queue import FairQueue
from blackroad.engines.stops import StopMatcher
from blackroad.errors import ContextLengthExceeded, InvalidRequest
from blackroad.models.templates import ChatTemplate
from blackroad.models.types import ModelEntry

T = TypeVar("T")
Emit = Callable[[Chunk], None]

# llama.cpp's enum value for mean pooling (LLAMA_POOLING_TYPE_MEAN).
_POOLING_MEAN = 1


@dataclass(frozen=True)
class LlamaCppOptions:
    n_ctx: int
    n_threads: int
    n_batch: int
    max_queue: int
    retry_after: int


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def compile_grammar(schema: Any) -> Any:
    """A llama.cpp grammar for JSON output: any object for ``{}``, else the schema."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        if not schema:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # the converter raises assorted errors on unsupported schemas
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc


def tokenize_prompt(llama: Any, prompt: str) -> list[int]:
    """Prompt text to tokens, special tokens parsed, BOS added if the vocabulary wants it."""
    # A template that writes the BOS text itself (Gemma's does) must not get a
    # second BOS from a vocabulary that adds one.
    bos_text = llama._model.token_get_text(llama.token_bos())
    add_bos = not (bos_text and prompt.startswith(bos_text))
    tokens: list[int] = llama.tokenize(prompt.encode(), add_bos=add_bos, special=True)
    return tokens


def _kv_cache_bytes(llama: Any, n_ctx: int) -> int:
    """Keys and values in f16 for every layer and position of the context."""
    import llama_cpp

    model = llama._model.model
    heads = max(1, llama_cpp.llama_model_n_head(model))
    kv_width = llama_cpp.llama_model_n_embd(model) * llama_cpp.llama_model_n_head_kv(model) // heads
    return int(2 * 2 * n_ctx * llama_cpp.llama_model_n_layer(model) * kv_width)


def generate_options(params: SamplingParams) -> dict[str, Any]:
    """The sampling arguments of ``Llama.generate`` for ``params``."""
    return {
        "top_k": params.top_k,
        "top_p": params.top_p,
        "min_p": params.min_p,
        "temp": params.temperature,
        "repeat_penalty": params.repeat_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }


class LlamaCppEngine(Engine):
    def __init__(self, entry: ModelEntry, options: LlamaCppOptions) -> None:
        self.model = entry.name
        self.entry = entry
        self.options = options
        self.template = ChatTemplate.for_model(entry.metadata, entry.config.template)
        self.n_ctx = min(options.n_ctx, entry.metadata.context_length or options.n_ctx)
        self._queue = FairQueue(options.max_queue, options.retry_after)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"llama[{entry.name}]")
        self._llama: Any = None
        self._embedder: Any = None
        self._stop_tokens: frozenset[int] = frozenset()
        self._pieces: dict[int, bytes] = {}
        self._state_bytes = 0

    @property
    def loaded(self) -> bool:
        return self._llama is not None or self._embedder is not None

    @property
    def idle(self) -> bool:
        return not self._queue.busy and self._queue.waiting == 0

    @property
    def memory_bytes(self) -> int:
        """Weights plus context state: measured once loaded, estimated before."""
        meta = self.entry.metadata
        # Before loading: the KV cache of a typical small model is about
        # n_ctx x embedding_length x 4 bytes (keys and values, f16, fewer KV heads).
        state = self._state_bytes or self.n_ctx * meta.embedding_length * 4
        if self._llama is not None and self._embedder is not None:
            state *= 2  # the embedding context has a cache of its own
        return self.entry.size + state

    # -- worker-thread side ------------------------------------------------

    def _load_sync(self) -> int:
        """Load the model if needed; return the nanoseconds it took (0 if loaded)."""
        if self._llama is not None:
            return 0
        import llama_cpp

        started = time.perf_counter_ns()
        llama = llama_cpp.Llama(
            str(self.entry.path),
            n_ctx=self.n_ctx,
            n_batch=self.options.n_batch,
            n_threads=self.options.n_threads,
            n_threads_batch=self.options.n_threads,
            verbose=False,
        )
        stop_tokens = set()
        for text in self.template.stop:
            ids = llama.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stop_tokens.add(ids[0])
        self._llama, self._stop_tokens = llama, frozenset(stop_tokens)
        self._state_bytes = _kv_cache_bytes(llama, self.n_ctx)
        return time.perf_counter_ns() - started

    def _embedder_sync(self) -> Any:
        if self._embedder is None:
            from llama_cpp import Llama

            pooling = self.entry.metadata.pooling_type
            embedder = Llama(
                str(self.entry.path),
                embedding=True,
                # A chat model has no pooling of its own; mean pooling gives one vector.
                pooling_type=_POOLING_MEAN if pooling in (None, 0) else pooling,
                n_ctx=self.n_ctx,
                n_batch=self.n_ctx,
                n_ubatch=self.n_ctx,
                n_threads=self.options.n_threads,
                n_threads_batch=self.options.n_threads,
                verbose=False,
            )
            self._embedder = embedder
            self._state_bytes = self._state_bytes or _kv_cache_bytes(embedder, self.n_ctx)
        return self._embedder

    def _piece(self, token: int) -> bytes:
        """The bytes of one token, without special-token text; memoized per vocabulary."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            vocab = self._llama._model.vocab
            size = 64
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
            if length < 0:  # the piece needs -length bytes
                size = -length
                buffer = ctypes.create_string_buffer(size)
                length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
            piece = self._pieces[token] = buffer.raw[:length]
        return piece

    def _generate_sync(
        self,
        prompt: Callable[[Any], list[int]],
        prompt_arg: str,
        params: SamplingParams,
        grammar: Any,
        emit: Emit,
        cancel: threading.Event,
    ) -> None:
        import llama_cpp

        load_ns = self._load_sync()
        llama = self._llama
        tokens = prompt(llama)
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise ContextLengthExceeded(
                f"this model's context is {self.n_ctx} tokens, but the prompt has "
                f"{len(tokens)} tokens",
                param=prompt_arg,
            )
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        llama.set_seed(secrets.randbits(32) if params.seed is None else params.seed)
        vocab = llama._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(params.stop)
        reason: FinishReason = "length"
        produced = 0
        started = time.perf_counter_ns()
        first_token_at = started
        generator = llama.generate(tokens, grammar=grammar, **generate_options(params))
        try:
            for token in generator:
                if produced == 0:
                    first_token_at = time.perf_counter_ns()
                if cancel.is_set():
                    return
                if llama_cpp.llama_vocab_is_eog(vocab, token) or token in self._stop_tokens:
                    reason = "stop"
                    break
                produced += 1
                piece = decoder.decode(self._piece(token))
                text, stopped = stops.push(piece)
                if text:
                    emit(Chunk(text))
                if stopped:
                    reason = "stop"
                    break
                if produced >= limit:
                    break
        finally:
            generator.close()
        tail = stops.flush() + decoder.decode(b"", final=True)
        done = time.perf_counter_ns()
        emit(
            Chunk(
                tail,
                Finish(
                    reason=reason,
                    prompt_tokens=len(tokens),
                    completion_tokens=produced,
                    load_ns=load_ns,
                    prompt_eval_ns=first_token_at - started,
                    eval_ns=done - first_token_at,
                ),
            )
        )

    # -- event-loop side ---------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the model's worker thread, in turn with everything else."""
        await self._queue.acquire()
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        future.add_done_callback(lambda _: self._queue.release())
        return await asyncio.shield(future)

    async def _stream(self, job: Callable[[Emit, threading.Event], None]) -> AsyncIterator[Chunk]:
        await self._queue.acquire()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def run() -> None:
            try:
                job(emit, cancel)
            except BaseException as exc:
                emit(_Failure(exc))
            finally:
                emit(_DONE)

        future = loop.run_in_executor(self._executor, run)
        future.add_done_callback(lambda _: self._queue.release())
        try:
            while (item := await items.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            cancel.set()

    def _start(
        self, prompt: Callable[[Any], list[int]], prompt_arg: str, params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        """Check what can be checked at once, then queue the generation.

        ``prompt`` turns the loaded model into prompt tokens, on the worker thread.
        """
        if params.max_tokens is not None and params.max_tokens > self.n_ctx:
            raise InvalidRequest(
                f"max_tokens is {params.max_tokens}, but this model's context is only "
                f"{self.n_ctx} tokens",
                param="max_tokens",
            )
        grammar = None if params.json_schema is None else compile_grammar(params.json_schema)
        return self._stream(
            lambda emit, cancel: self._generate_sync(
                prompt, prompt_arg, params, grammar, emit, cancel
            )
        )

    def stream_completion(self, prompt: str, params: SamplingParams) -> AsyncIterator[Chunk]:
        return self._start(lambda llama: tokenize_prompt(llama, prompt), "prompt", params)

    def stream_chat(
        self, messages: Sequence[Message], params: SamplingParams, template: str | None = None
    ) -> AsyncIterator[Chunk]:
        chat = self.template
        if template is not None:
            chat = ChatTemplate.for_model(self.entry.metadata, template)
        text = chat.render(messages)
        stop = (*params.stop, *chat.stop)
        return self._start(
            lambda llama: tokenize_prompt(llama, text), "messages", replace(params, stop=stop)
        )

    def stream_infill(
        self, prefix: str, suffix: str, params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        def tokens(llama: Any) -> list[int]:
            import llama_cpp

            vocab = llama._model.vocab
            pre, suf, mid = (
                llama_cpp.llama_vocab_fim_pre(vocab),
                llama_cpp.llama_vocab_fim_suf(vocab),
                llama_cpp.llama_vocab_fim_mid(vocab),
            )
            if min(pre, suf, mid) < 0:
                raise InvalidRequest(f"{self.model} does not support insert", param="suffix")
            head = llama.tokenize(prefix.encode(), add_bos=False, special=False)
            tail = llama.tokenize(suffix.encode(), add_bos=False, special=False)
            return [pre, *head, suf, *tail, mid]

        return self._start(tokens, "prompt", params)

    async def embed(self, inputs: Sequence[str], truncate: bool = False) -> Embeddings:
        def work() -> Embeddings:
            embedder = self._embedder_sync()
            counts = [len(embedder.tokenize(text.encode())) for text in inputs]
            if truncate:
                counts = [min(count, self.n_ctx) for count in counts]
            for index, count in enumerate(counts):
                if count > self.n_ctx:
                    raise ContextLengthExceeded(
                        f"input[{index}] has {count} tokens; this model embeds at most "
                        f"{self.n_ctx}",
                        param="input",
                    )
            vectors = embedder.embed(list(inputs), normalize=True, truncate=truncate)
            return Embeddings([list(map(float, v)) for v in vectors], sum(counts))

        return await self._call(work)

    async def tokenize(self, text: str) -> list[int]:
        def work() -> list[int]:
            self._load_sync()
            return tokenize_prompt(self._llama, text)

        return await self._call(work)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        def work() -> str:
            self._load_sync()
            return str(self._llama.detokenize(list(tokens)).decode("utf-8", errors="replace"))

        return await self._call(work)

    async def load(self) -> None:
        await self._call(self._load_sync)

    async def unload(self) -> None:
        def work() -> None:
            for llama in (self._llama, self._embedder):
                if llama is not None:
                    llama.close()
            self._llama = self._embedder = None
            self._pieces.clear()
            self._state_bytes = 0

        await self._call(work)

    def close(self) -> None:
        """Stop the worker thread; called once at shutdown, after ``unload``."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def health(self) -> EngineHealth:
        return EngineHealth(
            model=self.model,
            loaded=self.loaded,
            busy=self._queue.busy,
            queued=self._queue.waiting,
            extra={"n_ctx": self.n_ctx},
        )
