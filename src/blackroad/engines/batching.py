"""Continuous batching on one llama.cpp context, with a prefix KV cache per sequence.

The context holds ``n_seq`` KV streams (llama.cpp sequences, ``kv_unified``
off, so each stream attends only to its own cells). A request runs in one
stream; up to ``n_parallel`` run at once and the other streams keep the KV
of finished requests for reuse. Every ``step`` is one ``llama_decode`` of a
batch holding the next token of every decoding sequence plus a chunk of the
prompts still being read, so:

- a request joins between two steps and leaves when it finishes;
- every decoding sequence gets exactly one token per step (no stream starves);
- a long prompt is read ``n_batch`` tokens per step, minus the step's decode
  tokens, so it slows the others' decoding instead of freezing it;
- each sequence keeps its own sampler chain (seed, penalties, grammar) and
  its own stop sequences.

Prefix cache: a new prompt goes to the stream whose cached tokens share its
longest prefix (the same system prompt, the earlier turns of the same
conversation), and only the rest is read. When that stream is busy its
whole stream is copied to a free one and cut to the shared prefix. Streams
are reused least recently used first. Their memory is fixed when the
context is made (``n_seq`` x ``n_ctx`` cells), so the cache is bounded by
construction.
"""

from __future__ import annotations

import codecs
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from blackroad.engines.base import Chunk, Finish, FinishReason, SamplingParams
from blackroad.engines.stops import StopMatcher
from blackroad.errors import EngineError

Emit = Callable[[Chunk], None]
# Called once when a generation leaves its stream: None when it finished or was cancelled.
End = Callable[[BaseException | None], None]
# How far back the repetition penalties look, as llama-cpp-python's default.
PENALTY_LAST_N = 64
# Shorter shared prefixes are not worth taking another stream's place for.
MIN_REUSE = 8
# Copying a busy stream moves all of its cells (llama.cpp copies streams whole,
# about 25 MB per 1,000 cells for a small model): worth it only for a long prefix.
MIN_COPY = 64


def make_sampler(model: Any, params: SamplingParams, grammar: Any, n_vocab: int) -> Any:
    """A llama.cpp sampler chain for ``params``, in llama-cpp-python's order."""
    from llama_cpp import _internals

    factory: Any = _internals.LlamaSampler
    sampler: Any = factory()
    sampler.add_penalties(
        n_vocab,
        PENALTY_LAST_N,
        params.repeat_penalty,
        params.frequency_penalty,
        params.presence_penalty,
    )
    if grammar is not None:
        sampler.add_grammar(model, grammar)
    if params.temperature == 0:
        sampler.add_greedy()
    else:
        sampler.add_top_k(params.top_k)
        sampler.add_top_p(params.top_p, 1)
        sampler.add_min_p(params.min_p, 1)
        sampler.add_temp(params.temperature)
        sampler.add_dist(secrets.randbits(32) if params.seed is None else params.seed)
    return sampler


@dataclass
class Generation:
    """One request's generation: its prompt, its limits, and the text it has produced."""

    tokens: list[int]
    params: SamplingParams
    grammar: Any
    emit: Emit
    end: End
    cancel: threading.Event
    limit: int  # completion tokens at most
    load_ns: int = 0
    started_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int = 0
    produced: int = 0
    reused: int = 0  # prompt tokens found in the cache
    stops: StopMatcher = field(init=False)
    decoder: codecs.IncrementalDecoder = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.params.stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> bool:
        """Emit a generated token's text; whether a stop sequence or the limit ended it."""
        self.produced += 1
        text, stopped = self.stops.push(self.decoder.decode(piece))
        if text:
            self.emit(Chunk(text))
        return stopped

    def finish(self, reason: FinishReason) -> None:
        done = time.perf_counter_ns()
        first = self.first_token_ns or done
        tail = self.stops.flush() + self.decoder.decode(b"", final=True)
        self.emit(
            Chunk(
                tail,
                Finish(
                    reason=reason,
                    prompt_tokens=len(self.tokens),
                    completion_tokens=self.produced,
                    load_ns=self.load_ns,
                    prompt_eval_ns=first - self.started_ns,
                    eval_ns=done - first,
                ),
            )
        )


@dataclass
class _Stream:
    """One KV stream (a llama.cpp sequence id) and the tokens its cells hold."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    generation: Generation | None = None
    sampler: Any = None
    fed: int = 0  # prompt tokens in the cache so far
    next_token: int | None = None  # sampled, not yet decoded
    last_used: float = 0.0


@dataclass
class CacheStats:
    prompts: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class BatchDecoder:
    """The sequences of one context, decoded together one step at a time.

    Not thread-safe: one worker thread owns it, as it owns the context.
    """

    def __init__(
        self,
        model: Any,
        context: Any,
        n_seq: int,
        n_batch: int,
        is_end: Callable[[int], bool],
        piece: Callable[[int], bytes],
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.model = model
        self.context = context
        self.n_batch = n_batch
        self.is_end = is_end
        self.piece = piece
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self.streams = [_Stream(seq_id) for seq_id in range(n_seq)]
        self.stats = CacheStats()
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._order: list[_Stream] = []  # running streams, in admission order

    @property
    def active(self) -> int:
        return len(self._order)

    @property
    def cached_tokens(self) -> int:
        return sum(len(stream.cached) for stream in self.streams)

    def close(self) -> None:
        for stream in list(self._order):
            self._release(stream, EngineError("the model was unloaded"))
        self._llama_cpp.llama_batch_free(self._batch)

    # -- placing a request -------------------------------------------------

    def admit(self, generation: Generation) -> None:
        """Place a generation in a stream, reusing the longest cached prefix of its prompt."""
        free = [s for s in self.streams if s.generation is None]
        if not free:
            raise EngineError("no free sequence: admission must not exceed n_parallel")
        tokens = generation.tokens
        # The last prompt token is always read again: its logits give the first token.
        most = len(tokens) - 1
        idle, idle_common = self._longest_prefix(free, tokens, most)
        busy, busy_common = self._longest_prefix(self._order, tokens, most)
        if busy is not None and busy_common - idle_common >= MIN_COPY:
            target, common = self._vacant(free), busy_common
            self._copy(busy, target)
        elif idle is not None and idle_common >= MIN_REUSE:
            target, common = idle, idle_common
        else:
            target, common = self._vacant(free), 0
        self._truncate(target, common)
        target.generation = generation
        target.sampler = make_sampler(
            self.model, generation.params, generation.grammar, self.n_vocab
        )
        target.fed = common
        target.next_token = None
        generation.reused = common
        self.stats.prompts += 1
        self.stats.prompt_tokens += len(tokens)
        self.stats.reused_tokens += common
        self._order.append(target)

    @staticmethod
    def _longest_prefix(
        streams: Sequence[_Stream], tokens: Sequence[int], most: int
    ) -> tuple[_Stream | None, int]:
        best, common = None, 0
        for stream in streams:
            shared = min(_common_prefix(stream.cached, tokens), most)
            if shared > common:
                best, common = stream, shared
        return best, common

    def _vacant(self, free: Sequence[_Stream]) -> _Stream:
        """The free stream to overwrite when no cached prefix is worth keeping.

        One next to a running stream first: running streams on consecutive
        ids decode as one sub-batch (see ``_fill``). Then an empty one, then
        the one unused the longest.
        """
        running = {stream.seq_id for stream in self._order}

        def cost(stream: _Stream) -> tuple[bool, bool, float, int]:
            beside = not running or bool({stream.seq_id - 1, stream.seq_id + 1} & running)
            return (not beside, len(stream.cached) > 0, stream.last_used, stream.seq_id)

        return min(free, key=cost)

    def _copy(self, source: _Stream, target: _Stream) -> None:
        memory = self.context.memory
        self._llama_cpp.llama_memory_seq_rm(memory, target.seq_id, -1, -1)
        # Across streams llama.cpp copies whole streams only; the tail is cut after.
        self._llama_cpp.llama_memory_seq_cp(memory, source.seq_id, target.seq_id, -1, -1)
        target.cached = list(source.cached)

    def _truncate(self, stream: _Stream, keep: int) -> None:
        if len(stream.cached) > keep:
            memory = self.context.memory
            if not self._llama_cpp.llama_memory_seq_rm(memory, stream.seq_id, keep, -1):
                # A cache that cannot drop a partial range (a recurrent model): start over.
                self._llama_cpp.llama_memory_seq_rm(memory, stream.seq_id, -1, -1)
                keep = 0
            del stream.cached[keep:]

    # -- decoding ----------------------------------------------------------

    def step(self) -> None:
        """Drop cancelled sequences, then decode one batch and sample from it."""
        for stream in [s for s in self._order if s.generation and s.generation.cancel.is_set()]:
            self._release(stream)
        if not self._order:
            return
        # What each stream puts in this step: its next token, or a chunk of its
        # prompt, decoding streams first so a long prompt cannot crowd them out.
        work: dict[int, list[int]] = {}
        budget = self.n_batch
        for stream in self._order:
            if stream.next_token is not None:
                work[stream.seq_id] = [stream.next_token]
                stream.next_token = None
                budget -= 1
        for stream in self._order:
            generation = stream.generation
            assert generation is not None
            remaining = len(generation.tokens) - stream.fed
            if remaining > 0 and budget > 0:
                take = min(remaining, budget)
                work[stream.seq_id] = generation.tokens[stream.fed : stream.fed + take]
                stream.fed += take
                budget -= take
        sampled = self._fill(work)
        status = self._llama_cpp.llama_decode(self.context.ctx, self._batch)
        if status != 0:
            self._fail_all(EngineError(f"llama_decode failed with status {status}"))
            return
        for stream, index in sampled:
            self._sample(stream, index)

    def _fill(self, work: dict[int, list[int]]) -> list[tuple[_Stream, int]]:
        """Put the step's tokens in the batch; the streams to sample, with their logits' index.

        In order of sequence id: with one KV stream per sequence, llama.cpp
        splits a batch into sub-batches of consecutive sequence ids taken in
        batch order, and each sub-batch is a full pass over the weights
        (8 sequences in admission order took 65 ms a step, sorted 38 ms).
        """
        batch = self._batch
        count = 0
        sampled: list[tuple[_Stream, int]] = []
        for seq_id in sorted(work):
            stream = self.streams[seq_id]
            generation = stream.generation
            assert generation is not None
            tokens = work[seq_id]
            # Logits for the last token, once the whole prompt is in: the next token.
            read = stream.fed == len(generation.tokens)
            for offset, token in enumerate(tokens):
                batch.token[count] = token
                batch.pos[count] = len(stream.cached)
                batch.n_seq_id[count] = 1
                batch.seq_id[count][0] = seq_id
                batch.logits[count] = wanted = read and offset == len(tokens) - 1
                if wanted:
                    sampled.append((stream, count))
                stream.cached.append(token)
                count += 1
        batch.n_tokens = count
        return sampled

    def _sample(self, stream: _Stream, index: int) -> None:
        generation = stream.generation
        assert generation is not None
        token = stream.sampler.sample(self.context, index)
        if generation.first_token_ns == 0:
            generation.first_token_ns = time.perf_counter_ns()
        reason: FinishReason | None = None
        if self.is_end(token) or generation.push(self.piece(token)):
            reason = "stop"
        elif generation.produced >= generation.limit:
            reason = "length"
        if reason is None:
            stream.next_token = token
            return
        generation.finish(reason)
        self._release(stream)

    def _release(self, stream: _Stream, error: BaseException | None = None) -> None:
        """Free a stream; its cache stays for the next prompt that shares it."""
        generation = stream.generation
        stream.sampler.close()
        stream.sampler = stream.generation = stream.next_token = None
        stream.last_used = time.monotonic()
        self._order.remove(stream)
        if generation is not None:
            generation.end(error)

    def _fail_all(self, error: EngineError) -> None:
        memory = self.context.memory
        for stream in list(self._order):
            self._llama_cpp.llama_memory_seq_rm(memory, stream.seq_id, -1, -1)
            stream.cached.clear()
            self._release(stream, error)
