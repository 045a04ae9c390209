"""Prometheus metrics of one server: the requests it served and its engines' state.

``Metrics`` owns a ``CollectorRegistry`` of its own, never prometheus_client's
global one, so several apps in one process keep separate counts. Request
counters and histograms move once per request, when its record is committed
(``api/recording.py``). Engine and node gauges are not kept in sync by hand:
they are read from the engine pool and the fleet router each time the
metrics are scraped.

Label values are bounded: ``api`` is one of three, ``path`` a route template
(never the raw URL), and a refused request carries no model name, since the
name is whatever the client sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from blackroad.engines.base import EngineHealth

# What ``generate_latest`` writes (names escaped to underscores) is the classic
# text format, version 0.0.4; prometheus-client's CONTENT_TYPE_LATEST has named
# version 1.0.0 since 0.22, which older scrapers do not know.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# CPU inference: a short reply from a loaded small model starts within tens of
# milliseconds; a long prompt, a cold load or a long answer takes up to a minute.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
OTHER = "other"
CLIENT_CLOSED = 499  # a client that left mid-response, as api/recording.py records it


def api_of(path: str) -> str:
    """The API a raw request path belongs to: ``openai``, ``ollama`` or ``other``."""
    for prefix, api in (("/v1", "openai"), ("/api", "ollama")):
        if path == prefix or path.startswith(prefix + "/"):
            return api
    return OTHER


def model_label(model: str | None, status: int) -> str:
    """The model, unless the request was refused (4xx other than a client leaving).

    A refused request's model is whatever the client sent (an unknown name is
    a 404): labelling by it would let clients create series without bound.
    """
    if model is None or (400 <= status < 500 and status != CLIENT_CLOSED):
        return ""
    return model


class _EngineCollector:
    """Gauges computed at scrape time from the engines of this node."""

    def __init__(self, engines: Callable[[], Iterable[EngineHealth]]) -> None:
        self._engines = engines

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        by_model = ["model"]
        return {
            "depth": GaugeMetricFamily(
                "blackroad_queue_depth",
                "Requests waiting for a model's engine (not counting those it serves).",
                labels=by_model,
            ),
            "active": GaugeMetricFamily(
                "blackroad_active_sequences",
                "Generations and calls a model's engine is running now.",
                labels=by_model,
            ),
            "loaded": GaugeMetricFamily(
                "blackroad_model_loaded",
                "1 while the model is loaded in memory, else 0 (models requested since start).",
                labels=by_model,
            ),
            "count": GaugeMetricFamily("blackroad_models_loaded", "Models loaded in memory."),
            "prompt": CounterMetricFamily(
                "blackroad_prefix_cache_prompt_tokens",
                "Prompt tokens of generations since the model loaded.",
                labels=by_model,
            ),
            "reused": CounterMetricFamily(
                "blackroad_prefix_cache_reused_tokens",
                "Prompt tokens found in the prefix cache instead of read again (hit rate: "
                "this over blackroad_prefix_cache_prompt_tokens).",
                labels=by_model,
            ),
            "cached": GaugeMetricFamily(
                "blackroad_prefix_cache_tokens",
                "Tokens whose keys and values the model's cache holds now.",
                labels=by_model,
            ),
            "capacity": GaugeMetricFamily(
                "blackroad_prefix_cache_capacity_tokens",
                "Tokens the model's cache can hold (every sequence's context).",
                labels=by_model,
            ),
        }

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        total = 0
        for engine in self._engines():
            labels = [engine.model]
            families["depth"].add_metric(labels, engine.queued)
            families["active"].add_metric(labels, engine.active)
            families["loaded"].add_metric(labels, int(engine.loaded))
            total += engine.loaded
            if engine.cache is not None:
                families["prompt"].add_metric(labels, engine.cache.prompt_tokens)
                families["reused"].add_metric(labels, engine.cache.reused_tokens)
                families["cached"].add_metric(labels, engine.cache.cached_tokens)
                families["capacity"].add_metric(labels, engine.cache.capacity_tokens)
        families["count"].add_metric([], total)
        yield from families.values()


@dataclass(frozen=True)
class NodeLoad:
    """One node of the fleet as the router sees it (this node among them)."""

    node: str
    up: bool  # its breaker lets requests through
    outstanding: int  # requests the router has on it now
    tokens_per_second: float | None  # the router's measurement; None until measured


class _FleetCollector:
    """Per-node gauges, and the requests waiting for a node, read from the router at scrape time."""

    def __init__(self, nodes: Callable[[], Iterable[NodeLoad]], waiting: Callable[[], int]) -> None:
        self._nodes = nodes
        self._waiting = waiting

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "up": GaugeMetricFamily(
                "blackroad_node_up", "1 if the node takes requests (its breaker is closed).",
                labels=["node"],
            ),
            "outstanding": GaugeMetricFamily(
                "blackroad_node_outstanding", "Requests the router has on the node now.",
                labels=["node"],
            ),
            "speed": GaugeMetricFamily(
                "blackroad_node_decode_tokens_per_second",
                "Decode speed of the node's streams, as the router measured them.",
                labels=["node"],
            ),
            "waiting": GaugeMetricFamily(
                "blackroad_fleet_waiting",
                "Requests waiting for a node: each that serves their model is full or down.",
            ),
        }  # fmt: skip

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for load in self._nodes():
            families["up"].add_metric([load.node], int(load.up))
            families["outstanding"].add_metric([load.node], load.outstanding)
            if load.tokens_per_second is not None:
                families["speed"].add_metric([load.node], load.tokens_per_second)
        families["waiting"].add_metric([], self._waiting())
        yield from families.values()


class Metrics:
    """The metrics of one app: updated per request, gauges read at scrape time."""

    def __init__(
        self,
        engines: Callable[[], Iterable[EngineHealth]],
        nodes: Callable[[], Iterable[NodeLoad]],
        waiting: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "blackroad_requests",
            "HTTP requests answered, by API, route, model and status.",
            ["api", "path", "model", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "blackroad_tokens",
            "Tokens processed: prompt (read) and completion (generated).",
            ["model", "direction"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "blackroad_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
            ["model"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "blackroad_request_duration_seconds",
            "Time from a request's arrival to its record (its last byte, or the client leaving).",
            ["api", "path"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engines))
        self.registry.register(_FleetCollector(nodes, waiting))

    def observe(
        self,
        *,
        path: str,
        route: str | None,
        model: str | None,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_seconds: float | None,
        duration_seconds: float,
    ) -> None:
        """Count one finished request; ``route`` is its path template (None: no route)."""
        api, template, name = api_of(path), route or OTHER, model_label(model, status)
        self.requests.labels(api, template, name, str(status)).inc()
        self.request_duration.labels(api, template).observe(duration_seconds)
        if not name:
            return
        if prompt_tokens:
            self.tokens.labels(name, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(name, "completion").inc(completion_tokens)
        if ttft_seconds is not None:
            self.time_to_first_token.labels(name).observe(ttft_seconds)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
