"""Settings: every knob of a BlackRoad process, read once from the environment.

Each field maps to ``BLACKROAD_<FIELD>`` (upper case). The CLI overrides a few
of them with flags; nothing else reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackroad.bounded import Bounds

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _default_memory() -> int:
    """Three quarters of physical memory: the rest is for the OS and page cache."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4
    except (ValueError, OSError):
        return 4 << 30


def _default_parallel() -> int:
    """Four sequences, or two on a machine with under 6 GiB: the KV caches must fit."""
    return 2 if _default_memory() < 4.5 * 2**30 else 4


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@dataclass(frozen=True)
class Settings:
    """Configuration of one BlackRoad process."""

    home: Path = field(default_factory=lambda: Path.home() / ".blackroad")
    host: str = "127.0.0.1"
    port: int = 11434
    # A shared key that acts as the local admin; users' own keys live in the database.
    api_key: str | None = None
    # "auto": keys are required unless bound to loopback with no shared key
    # (then callers run as the local admin, as with Ollama); "on": always.
    auth: str = "auto"
    # Host names this server answers to besides localhost, IP addresses, this
    # machine's name and the bound address (comma-separated; "*.example.org" for
    # a domain, "*" for any): every other Host is refused, which is what stops
    # DNS-rebinding pages (browser_guard.py).
    allowed_hosts: str = ""
    # The reverse proxies (IP addresses, CIDR networks; comma-separated) whose
    # X-Forwarded-For names the client (api/proxies.py); from anyone else it is ignored.
    trusted_proxies: str = ""
    # The first admin, created by ``blackroad up`` on an empty home; without a
    # password given here, one is generated and printed once.
    admin_user: str = "admin"
    admin_password: str | None = None
    # Where all state lives: a SQLAlchemy/libpq URL such as
    # postgresql://user:pass@host:5432/blackroad (or ?host=/socket/dir), shared by
    # every control plane given the same URL; unset, the SQLite file under home.
    database_url: str | None = None
    # Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = 8 * 1024 * 1024
    # Largest upload of documents to a knowledge base in one request, in bytes.
    max_upload_bytes: int = 64 * 1024 * 1024
    # Requests allowed to wait per model behind the one being served (503 past it).
    max_queue: int = 16
    # Seconds a client is told to wait when the queue is full.
    retry_after: int = 2
    # Context window per sequence, capped by the model's own training context.
    num_ctx: int = 4096
    # Generations one loaded model decodes together (continuous batching). Each
    # of their sequences keeps its last conversation's KV cache for reuse;
    # num_cached adds sequences that only keep more of them. Every sequence
    # reserves num_ctx cells of KV cache when the model loads.
    num_parallel: int = field(default_factory=_default_parallel)
    num_cached: int = 0
    num_threads: int = field(default_factory=_default_threads)
    num_batch: int = 512
    # Models kept loaded at once, and the memory they may use together; idle
    # models are evicted least recently used first to stay within both.
    max_loaded_models: int = 3
    max_memory_bytes: int = field(default_factory=_default_memory)
    # Where models are pulled from and pushed to: a directory or an http(s) URL
    # of a mirror this organisation runs. Deliberately no default: nothing
    # reaches the internet unless someone points this at it.
    registry: str | None = None
    # The key this node presents to an HTTP registry: its own setting, so the
    # server's API key is never sent to another machine.
    registry_key: str | None = None
    # This machine's name in usage records and, later, in the fleet.
    node_name: str = field(default_factory=socket.gethostname)
    # How often a node that joined a control plane (``blackroad node``) reports its state.
    heartbeat_seconds: float = 2.0
    # Failed key attempts from one client address: past ``lockout_slow_after``
    # within ``lockout_window`` seconds, each further refusal is delayed; at
    # ``lockout_attempts`` the address is locked out for ``lockout_seconds``.
    lockout_slow_after: int = 5
    lockout_attempts: int = 10
    lockout_window: int = 300
    lockout_seconds: int = 900
    # How often each peer is probed (its models listed, its breaker told).
    fleet_probe_seconds: float = 2.0
    # Requests the router sends to one peer at once; more wait for a free one.
    node_concurrency: int = 4
    # How long a request, or a stream cut by its node, may wait for a node of its
    # model to be free or come back (every one busy or down) before 503.
    fleet_queue_timeout: float = 30.0
    # The audit log (audit/): "digests" keeps the sha256 of every request's
    # body and reply in its record; "full" keeps the texts too (erasable).
    audit_texts: str = "digests"
    # A signed checkpoint every so many records, or seconds, whichever first.
    audit_checkpoint_records: int = 1000
    audit_checkpoint_seconds: float = 60.0
    # How long audit records are kept at least: six months (EU AI Act art. 19).
    audit_retention_days: int = 183
    # The audit log's signing key (PEM, mode 0600); unset, audit.key under home.
    # Control planes sharing one database must be given the same key.
    audit_key_file: str | None = None
    # The energy and cost model (usage/cost.py). The node's power profile:
    # pi5, minipc, gpu, or auto (pi5 on a Raspberry Pi 5, minipc elsewhere).
    power_profile: str = "auto"
    # Wall power in watts when idle and when serving; None: the profile's figure.
    watts_idle: float | None = None
    watts_busy: float | None = None
    # What the node's hardware cost, in ``currency``; None: the profile's figure.
    hardware_cost: float | None = None
    # Years over which the hardware is written off.
    amortisation_years: float = 3.0
    # Price of 1 kWh in ``currency``: a European household price; set your own.
    electricity_price: float = 0.30
    # The label of every amount; the built-in cloud prices are in USD.
    currency: str = "USD"
    # A JSON file of cloud prices per 1M tokens, replacing the built-in table:
    # {"model": {"input": 0.15, "output": 0.60}, ...}, in ``currency``.
    cloud_prices: str | None = None
    # Long-term memory (memory/facts.py): the model that embeds memories and
    # queries for recall, and the chat model that extracts facts from a conversation.
    embedding_model: str = "all-minilm:l6-v2"
    memory_model: str = "smollm2:135m"
    # The npm packages the browser desktop serves (blackroad/web/vendor.py lists the
    # files); None: web/node_modules of the source tree, where `npm ci` puts them.
    web_modules: str | None = None
    # The hosts (``host`` or ``host:port``, comma-separated) agents' HTTP tools may
    # reach; none by default. Set by the administrator, never by an agent.
    agent_http_hosts: str = ""
    # Work that requests and files control (chat templates from requests, Modelfiles
    # and GGUFs; JSON schemas to grammars; the agents' calculator; the text of
    # uploaded documents) runs in helper processes (blackroad/bounded.py): this
    # many at once, each limited to work_memory_bytes of address space, each task
    # killed past its time limit below (422 to the caller).
    work_processes: int = Bounds.processes
    work_memory_bytes: int = Bounds.memory_bytes
    template_seconds: float = Bounds.template_seconds
    grammar_seconds: float = Bounds.grammar_seconds
    calculator_seconds: float = Bounds.calculator_seconds
    extract_seconds: float = Bounds.extract_seconds

    @property
    def bounds(self) -> Bounds:
        """The limits of the helper processes for untrusted work."""
        return Bounds(
            processes=self.work_processes,
            memory_bytes=self.work_memory_bytes,
            template_seconds=self.template_seconds,
            grammar_seconds=self.grammar_seconds,
            calculator_seconds=self.calculator_seconds,
            extract_seconds=self.extract_seconds,
        )

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def documents_dir(self) -> Path:
        """Knowledge-base documents as uploaded, named by their sha256."""
        return self.home / "documents"

    @property
    def agents_dir(self) -> Path:
        """The agents' sandbox directories for their file tools (``agents/sandboxes.py``)."""
        return self.home / "agents"

    @property
    def agent_hosts(self) -> frozenset[str]:
        return frozenset(host.strip() for host in self.agent_http_hosts.split(",") if host.strip())

    @property
    def audit_origin(self) -> str:
        """The name this installation's audit log signs its checkpoints under."""
        return f"blackroad/{self.node_name}/audit"

    @property
    def audit_key_path(self) -> Path:
        """The audit log's signing key file (``audit/log.py``)."""
        if self.audit_key_file is None:
            return self.home / "audit.key"
        return Path(self.audit_key_file).expanduser()

    @property
    def database_path(self) -> Path:
        return self.home / "blackroad.db"

    @property
    def database(self) -> Path | str:
        """What ``store.database.Database`` opens: ``database_url``, else the SQLite file."""
        return self.database_url or self.database_path

    @property
    def node_file(self) -> Path:
        """Where ``blackroad node`` keeps its membership: control plane, credential, key."""
        return self.home / "node.json"

    @property
    def auth_required(self) -> bool:
        return self.auth == "on" or self.api_key is not None or not self.is_loopback

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"BLACKROAD_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", "float | None"):
                values[f.name] = float(raw)
            elif f.name == "home":
                values[f.name] = Path(raw).expanduser()
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]
