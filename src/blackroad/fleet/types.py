"""The contract of ``fleet/``: what a node is, as the rest of BlackRoad sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from blackroad.engines.ollama_peer import OllamaPeer
from blackroad.engines.openai_peer import OpenAIPeer
from blackroad.engines.remote import RemoteEngine

NodeKind = Literal["ollama", "openai", "blackroad"]
# The engine that speaks each kind of peer's protocol. A BlackRoad node that
# joined (fleet/membership.py) is reached through its Ollama API, which
# carries every sampling option.
PEER_ENGINES: dict[str, type[RemoteEngine]] = {
    "ollama": OllamaPeer,
    "openai": OpenAIPeer,
    "blackroad": OllamaPeer,
}
NodeState = Literal["up", "down"]


@dataclass(frozen=True)
class NodeInfo:
    """A node as the operator sees it; never carries the node's key."""

    name: str
    kind: str
    url: str
    state: str
    models: tuple[str, ...]
    last_seen: datetime | None
    last_error: str | None
    # A BlackRoad node's last heartbeat (load, free memory, capabilities); None for others.
    stats: Mapping[str, Any] | None = None
    draining: bool = False  # routed no new work
