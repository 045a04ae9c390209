"""The embedded engine: llama.cpp in this process, through llama-cpp-python.

llama.cpp calls block, so everything on a model runs on one worker thread
per model (a context is not thread-safe) and the event loop only moves
text. The worker decodes up to ``n_parallel`` generations together
(``engines/batching.py``: continuous batching and the prefix cache) and runs
other calls (tokenize, embed, load, unload) between two decode steps, in
arrival order. Each job holds one of the model's ``FairQueue`` places until
the worker has really finished it, even when the client has gone: the place
is given back by the job's end, never by the request that started it.

Cancellation: closing a stream sets an event the worker checks before every
decode step, so a client that disconnects stops generation within one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from blackroad.engines.base import (
    CacheHealth,
    Chunk,
    Embeddings,
    Engine,
    EngineHealth,
    Message,
    SamplingParams,
)
from blackroad.engines.batching import BatchDecoder, Generation
from blackroad.engines.grammar import compile_grammar
from blackroad.engines.history import fitted
from blackroad.engines.queue import FairQueue
from blackroad.errors import ContextLengthExceeded, InvalidRequest
from blackroad.models.templates import ChatTemplate
from blackroad.models.types import ModelEntry

T = TypeVar("T")

# llama.cpp's enum value for mean pooling (LLAMA_POOLING_TYPE_MEAN).
_POOLING_MEAN = 1


@dataclass(frozen=True)
class LlamaCppOptions:
    n_ctx: int  # context per sequence
    n_threads: int
    n_batch: int  # tokens per decode step, prompt chunks included
    max_queue: int
    retry_after: int
    n_parallel: int = 1  # generations decoded together
    n_cached: int = 0  # further sequences that only keep finished prompts' KV for reuse

    @property
    def n_seq(self) -> int:
        return self.n_parallel + self.n_cached


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


def tokenize_prompt(model: Any, prompt: str) -> list[int]:
    """Prompt text to tokens, special tokens parsed, BOS added if the vocabulary wants it.

    ``model`` is llama-cpp-python's ``LlamaModel`` (``Llama._model``).
    """
    # A template that writes the BOS text itself (Gemma's does) must not get a
    # second BOS from a vocabulary that adds one.
    bos_text = model.token_get_text(model.token_bos())
    add_bos = not (bos_text and prompt.startswith(bos_text))
    tokens: list[int] = model.tokenize(prompt.encode(), add_bos=add_bos, special=True)
    return tokens


def _kv_cache_bytes(model: Any, n_cells: int) -> int:
    """Keys and values in f16 for every layer and cell of the cache."""
    import llama_cpp

    handle = model.model
    heads = max(1, llama_cpp.llama_model_n_head(handle))
    kv_width = llama_cpp.llama_model_n_embd(handle) * llama_cpp.llama_model_n_head_kv(handle)
    return int(2 * 2 * n_cells * llama_cpp.llama_model_n_layer(handle) * kv_width // heads)


def sequence_context(configured: int, entry: ModelEntry) -> int:
    """The context of one sequence: as configured, capped by what the model was trained for."""
    return min(configured, entry.metadata.context_length or configured)


def estimated_state_bytes(n_seq: int, n_ctx: int, embedding_length: int) -> int:
    """The KV cache of a model not yet loaded (loaded, it is measured).

    For a typical small model about n_ctx x embedding_length x 4 bytes per
    sequence: keys and values in f16, with fewer KV heads than heads.
    """
    return n_seq * n_ctx * embedding_length * 4


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
        self.n_ctx = sequence_context(options.n_ctx, entry)
        self._queue = FairQueue(options.max_queue, options.retry_after, options.n_parallel)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"llama[{entry.name}]")
        # Work for the worker thread, in arrival order; the drive loop runs while there is any.
        self._inbox: deque[Callable[[], None]] = deque()
        self._inbox_lock = threading.Lock()
        self._driving = False
        # Callbacks for event loops, gathered during a step (worker thread only).
        self._outbox: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self._model: Any = None  # llama-cpp-python's LlamaModel
        self._context: Any = None
        self._decoder: BatchDecoder | None = None
        self._embedder: Any = None
        self._stop_tokens: frozenset[int] = frozenset()
        self._pieces: dict[int, bytes] = {}
        self._state_bytes = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None or self._embedder is not None

    @property
    def idle(self) -> bool:
        return not self._queue.busy and self._queue.waiting == 0

    @property
    def memory_bytes(self) -> int:
        """Weights plus context state: measured once loaded, estimated before."""
        meta = self.entry.metadata
        # An embedding model has only the embedding context, with its own cache.
        embedder = self.n_ctx * meta.embedding_length * 4
        if meta.embedding_only:
            return self.entry.size + embedder
        state = self._state_bytes or estimated_state_bytes(
            self.options.n_seq, self.n_ctx, meta.embedding_length
        )
        if self._embedder is not None:
            state += embedder
        return self.entry.size + state

    @property
    def cached_tokens(self) -> int:
        """Tokens whose keys and values are in the cache, over every sequence."""
        return 0 if self._decoder is None else self._decoder.cached_tokens

    # -- worker-thread side ------------------------------------------------

    def _drive(self) -> None:
        """Run queued work and decode steps until there is neither."""
        while True:
            with self._inbox_lock:
                work = list(self._inbox)
                self._inbox.clear()
                if not work and (self._decoder is None or not self._decoder.active):
                    self._driving = False
                    return
            for item in work:
                item()
            if self._decoder is not None and self._decoder.active:
                self._decoder.step()
            self._flush()

    def _deliver(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """Queue a callback for ``loop``; sent with the rest of this step's by ``_flush``."""
        self._outbox.append((loop, callback))

    def _flush(self) -> None:
        """Hand a step's chunks to the event loop in one wake-up, not one per chunk.

        Each wake-up is a write to the loop's self-pipe and a turn of the loop
        holding the GIL the next decode step needs.
        """
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}
        for loop, callback in self._outbox:
            by_loop.setdefault(loop, []).append(callback)
        self._outbox.clear()
        for loop, callbacks in by_loop.items():
            loop.call_soon_threadsafe(_run_all, callbacks)

    def _load_sync(self) -> int:
        """Load the model if needed; return the nanoseconds it took (0 if loaded)."""
        if self._model is not None:
            return 0
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel

        # llama.cpp logs through llama-cpp-python's logger: errors only.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        started = time.perf_counter_ns()
        model: Any = LlamaModel(
            path_model=str(self.entry.path),
            params=llama_cpp.llama_model_default_params(),
            verbose=False,
        )
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = self.options.n_seq
        params.n_ctx = self.n_ctx * self.options.n_seq
        params.n_batch = params.n_ubatch = self.options.n_batch
        params.n_threads = params.n_threads_batch = self.options.n_threads
        # One KV stream per sequence: each attends only to its own cells.
        params.kv_unified = False
        # Full-size sliding-window caches, so a cached prefix can be cut anywhere.
        params.swa_full = True
        params.no_perf = True
        try:
            context = LlamaContext(model=model, params=params, verbose=False)
        except Exception:
            model.close()
            raise
        stop_tokens = set()
        for text in self.template.stop:
            ids = model.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stop_tokens.add(ids[0])
        self._model, self._context, self._stop_tokens = model, context, frozenset(stop_tokens)
        vocab = model.vocab
        self._decoder = BatchDecoder(
            model,
            context,
            self.options.n_seq,
            self.options.n_batch,
            lambda token: (
                bool(llama_cpp.llama_vocab_is_eog(vocab, token)) or token in self._stop_tokens
            ),
            self._piece,
        )
        self._state_bytes = _kv_cache_bytes(model, self.n_ctx * self.options.n_seq)
        return time.perf_counter_ns() - started

    def _embedder_sync(self) -> Any:
        if self._embedder is None:
            from llama_cpp import Llama

            pooling = self.entry.metadata.pooling_type
            self._embedder = Llama(
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
        return self._embedder

    def _piece(self, token: int) -> bytes:
        """The bytes of one token, without special-token text; memoized per vocabulary."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            vocab = self._model.vocab
            size = 64
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
            if length < 0:  # the piece needs -length bytes
                size = -length
                buffer = ctypes.create_string_buffer(size)
                length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
            piece = self._pieces[token] = buffer.raw[:length]
        return piece

    def _begin(
        self,
        prompt: Callable[[Any], list[int]],
        prompt_arg: str,
        params: SamplingParams,
        grammar: Any,
        emit: Callable[[Chunk], None],
        end: Callable[[BaseException | None], None],
        cancel: threading.Event,
    ) -> None:
        """Load, tokenize and check the prompt, then hand the generation to the decoder."""
        try:
            load_ns = self._load_sync()
            tokens = prompt(self._model)
            room = self.n_ctx - len(tokens)
            if room <= 0:
                raise ContextLengthExceeded(
                    f"this model's context is {self.n_ctx} tokens, but the prompt has "
                    f"{len(tokens)} tokens",
                    param=prompt_arg,
                )
            if not tokens:
                raise InvalidRequest("the prompt is empty", param=prompt_arg)
            limit = room if params.max_tokens is None else min(params.max_tokens, room)
            generation = Generation(tokens, params, grammar, emit, end, cancel, limit, load_ns)
            assert self._decoder is not None
            self._decoder.admit(generation)
        except BaseException as exc:
            end(exc)

    # -- event-loop side ---------------------------------------------------

    def _post(self, work: Callable[[], None]) -> None:
        """Queue work for the worker thread, starting its drive loop if it is idle."""
        with self._inbox_lock:
            self._inbox.append(work)
            if self._driving:
                return
            self._driving = True
        self._executor.submit(self._drive)

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the model's worker thread, in turn with everything else."""
        await self._queue.acquire()
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        try:
            self._post(run)
        except BaseException:
            self._queue.release()
            raise
        future = asyncio.wrap_future(result)
        future.add_done_callback(lambda _: self._queue.release())
        return await asyncio.shield(future)

    async def _stream(
        self, prompt: Callable[[Any], list[int]], prompt_arg: str, params: SamplingParams
    ) -> AsyncGenerator[Chunk, None]:
        grammar = None if params.json_schema is None else await compile_grammar(params.json_schema)
        await self._queue.acquire()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            self._deliver(loop, lambda: items.put_nowait(item))

        def end(error: BaseException | None) -> None:
            def ended() -> None:
                # One callback, so the place is free before the reader can see the end.
                self._queue.release()
                items.put_nowait(_DONE if error is None else _Failure(error))

            self._deliver(loop, ended)

        try:
            self._post(lambda: self._begin(prompt, prompt_arg, params, grammar, emit, end, cancel))
        except BaseException:
            self._queue.release()
            raise
        try:
            while (item := await items.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            cancel.set()

    def _start(
        self, prompt: Callable[[Any], list[int]], prompt_arg: str, params: SamplingParams
    ) -> AsyncGenerator[Chunk, None]:
        """Check what can be checked at once, then queue the generation.

        ``prompt`` turns the loaded model into prompt tokens, on the worker thread.
        """
        if params.max_tokens is not None and params.max_tokens > self.n_ctx:
            raise InvalidRequest(
                f"max_tokens is {params.max_tokens}, but this model's context is only "
                f"{self.n_ctx} tokens",
                param="max_tokens",
            )
        return self._stream(prompt, prompt_arg, params)

    def stream_completion(self, prompt: str, params: SamplingParams) -> AsyncIterator[Chunk]:
        return self._start(lambda model: tokenize_prompt(model, prompt), "prompt", params)

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        template: str | None = None,
        continue_final: bool = False,
        truncate: bool = False,
    ) -> AsyncIterator[Chunk]:
        chat = self.template
        if template is not None:
            chat = ChatTemplate.for_request(self.entry.metadata, template)
        return self._chat(chat, messages, params, continue_final, truncate)

    async def _chat(
        self,
        chat: ChatTemplate,
        messages: Sequence[Message],
        params: SamplingParams,
        continue_final: bool,
        truncate: bool,
    ) -> AsyncIterator[Chunk]:
        # An untrusted template renders in a helper process, awaited: never on
        # the event loop, and never on the worker thread while other sequences wait.
        text = await chat.rendered(messages, continue_final=continue_final)

        def prompt(model: Any) -> list[int]:
            def tokens(kept: Sequence[Message]) -> list[int]:
                # Only a chat too long for the context renders here, on the worker
                # thread, each time within the template's bound.
                return tokenize_prompt(model, chat.render(kept, continue_final=continue_final))

            whole = tokenize_prompt(model, text)
            if not truncate or len(whole) < self.n_ctx:
                return whole
            # The reply's room: a quarter of the context, or max_tokens if less.
            reserve = min(params.max_tokens or self.n_ctx, self.n_ctx // 4)
            return fitted(messages, tokens, self.n_ctx, reserve)

        stop = (*params.stop, *chat.stop)
        generation = self._start(prompt, "messages", replace(params, stop=stop))
        async with contextlib.aclosing(generation) as chunks:
            async for chunk in chunks:
                yield chunk

    def stream_infill(
        self, prefix: str, suffix: str, params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        def tokens(model: Any) -> list[int]:
            import llama_cpp

            vocab = model.vocab
            pre, suf, mid = (
                llama_cpp.llama_vocab_fim_pre(vocab),
                llama_cpp.llama_vocab_fim_suf(vocab),
                llama_cpp.llama_vocab_fim_mid(vocab),
            )
            if min(pre, suf, mid) < 0:
                raise InvalidRequest(f"{self.model} does not support insert", param="suffix")
            head = model.tokenize(prefix.encode(), add_bos=False, special=False)
            tail = model.tokenize(suffix.encode(), add_bos=False, special=False)
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

    def _vocabulary_sync(self) -> Any:
        """The loaded ``LlamaModel``: an embedding model's is the embedder's, never loaded twice."""
        if self.entry.metadata.embedding_only:
            return self._embedder_sync()._model
        self._load_sync()
        return self._model

    async def tokenize(self, text: str) -> list[int]:
        return await self._call(lambda: tokenize_prompt(self._vocabulary_sync(), text))

    async def detokenize(self, tokens: Sequence[int]) -> str:
        def work() -> str:
            text = self._vocabulary_sync().detokenize(list(tokens))
            return str(text.decode("utf-8", errors="replace"))

        return await self._call(work)

    async def load(self) -> None:
        """Make the model ready: an embedding model's embedder, a chat model's decoder."""
        if self.entry.metadata.embedding_only:
            await self._call(self._embedder_sync)
        else:
            await self._call(self._load_sync)

    async def unload(self) -> None:
        def work() -> None:
            if self._decoder is not None:
                self._decoder.close()
            for part in (self._embedder, self._context, self._model):
                if part is not None:
                    part.close()
            self._model = self._context = self._decoder = self._embedder = None
            self._pieces.clear()
            self._state_bytes = 0

        await self._call(work)

    def close(self) -> None:
        """Stop the worker thread; called once at shutdown, after ``unload``."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def health(self) -> EngineHealth:
        cache = None
        if self._decoder is not None:
            stats = self._decoder.stats
            cache = CacheHealth(
                prompts=stats.prompts,
                prompt_tokens=stats.prompt_tokens,
                reused_tokens=stats.reused_tokens,
                cached_tokens=self._decoder.cached_tokens,
                capacity_tokens=self.n_ctx * self.options.n_seq,
            )
        return EngineHealth(
            model=self.model,
            loaded=self.loaded,
            busy=self._queue.busy,
            queued=self._queue.waiting,
            active=self._queue.active,
            cache=cache,
            extra={"n_ctx": self.n_ctx, "parallel": self.options.n_parallel},
        )
