"""A node's side of membership: its membership file, joining, what it reports, and its heartbeats.

``blackroad node`` joins a control plane once with a join token, then keeps
``NodeFile`` (the control planes' URLs, the node's credential, the key its
own server requires, its name) in ``$BLACKROAD_HOME/node.json``, so it comes
back into the fleet by itself after a restart. Several URLs are replicas of
one control plane (one database): the join and each heartbeat go to the
first that answers, starting from the one that answered last, and a replica
unreachable or failing (5xx) passes the beat on to the next. Joining again
(``--token`` given to a node that has joined) presents that credential: its
name is its own, so no other machine can take it, and no token's use is
spent on it. Every few seconds it reports
its state (the wire format is ``Report``): the models it serves, which are
loaded, the sequences running and waiting, free memory, the decode speed it
measured per model, and what the machine can do (CPU architecture, cores,
SIMD extensions, accelerators). A failed heartbeat is logged and retried:
it never stops the node, which serves its own clients whatever the control
plane does. No secret is ever logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import platform
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# pydantic (api/fleet.py validates these) needs typing_extensions' TypedDict before 3.12.
from typing_extensions import TypedDict

from blackroad.config import Settings
from blackroad.engines.base import EngineHealth
from blackroad.engines.remote import error_message
from blackroad.errors import BlackRoadError, HTTPError, ServiceUnavailable
from blackroad.models.store import fsync_replace

log = logging.getLogger(__name__)

# CPU extensions that decide how fast llama.cpp runs here (the x86 ones it is
# built with in scripts/dev.py; Arm's dot-product and matrix extensions).
X86_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vbmi",
    "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
ARM_FLAGS = ("asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
# Device files of accelerators, by kind: a Hailo-8 is /dev/hailo0, an NVIDIA GPU /dev/nvidia0.
ACCELERATORS = {
    "hailo": "hailo[0-9]*",
    "nvidia": "nvidia[0-9]*",
    "amd": "kfd",
    "coral": "apex_[0-9]*",
    "npu": "accel/accel[0-9]*",
}
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 10.0


class Accelerator(TypedDict):
    kind: str
    device: str


class Capabilities(TypedDict):
    arch: str
    cores: int
    simd: list[str]
    accelerators: list[Accelerator]


class Stats(TypedDict):
    """A node's state as of one heartbeat."""

    loaded: list[str]
    active: int  # sequences generating now, over every model
    queued: int  # requests waiting for a place
    free_memory_bytes: int | None  # MemAvailable; None where unknown
    # Measured from the node's own request log; a model not measured is absent.
    decode_tokens_per_second: dict[str, float]
    capabilities: Capabilities
    heartbeat_seconds: float
    # What a model loaded here reserves: num_seq KV sequences of num_ctx cells.
    num_ctx: int
    num_seq: int


class Report(TypedDict):
    """The body of a heartbeat."""

    url: str  # where the node serves now
    models: list[str]
    stats: Stats


# -- the machine -------------------------------------------------------------


def _cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU's flags (x86 ``flags``, Arm ``Features``) as /proc/cpuinfo lists them."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def capabilities(proc: Path = Path("/proc"), dev: Path = Path("/dev")) -> Capabilities:
    """What this machine can do: its CPU architecture, cores, SIMD extensions, accelerators."""
    try:
        flags = _cpu_flags((proc / "cpuinfo").read_text())
    except OSError:
        flags = set()
    arch = platform.machine().lower() or "unknown"
    wanted = ARM_FLAGS if arch.startswith(("arm", "aarch")) else X86_FLAGS
    found: list[Accelerator] = [
        {"kind": kind, "device": str(device)}
        for kind, pattern in ACCELERATORS.items()
        for device in sorted(dev.glob(pattern))
    ]
    return {
        "arch": arch,
        "cores": os.cpu_count() or 1,
        "simd": [flag for flag in wanted if flag in flags],
        "accelerators": found,
    }


def free_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory available to new work without swapping (``MemAvailable``); None where unknown."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            number, _, unit = value.strip().partition(" ")
            return int(number) * (1024 if unit == "kB" else 1)
    return None


def report(
    url: str,
    models: Iterable[str],
    health: Sequence[EngineHealth],
    decode_rates: dict[str, float],
    machine: Capabilities,
    settings: Settings,
) -> Report:
    """One heartbeat's body from the node's catalog and the state of its engines."""
    return {
        "url": url,
        "models": sorted(models),
        "stats": {
            "loaded": sorted(h.model for h in health if h.loaded),
            "active": sum(h.active for h in health),
            "queued": sum(h.queued for h in health),
            "free_memory_bytes": free_memory_bytes(),
            "decode_tokens_per_second": {m: round(r, 2) for m, r in sorted(decode_rates.items())},
            "capabilities": machine,
            "heartbeat_seconds": settings.heartbeat_seconds,
            "num_ctx": settings.num_ctx,
            "num_seq": settings.num_parallel + settings.num_cached,
        },
    }


# -- membership --------------------------------------------------------------


@dataclass(frozen=True)
class NodeFile:
    """What a node keeps of its membership; secrets all, so the file is private (0600)."""

    control_planes: tuple[str, ...]  # replicas of one control plane, in the order given
    # Presented with each heartbeat. Neither secret is in the repr, nor so in a traceback.
    credential: str = field(repr=False)
    key: str = field(repr=False)  # the key this node's server requires, given to the control plane
    name: str

    @classmethod
    def load(cls, path: Path) -> NodeFile | None:
        """The membership kept at ``path``; None if there is none."""
        try:
            data = json.loads(path.read_text())
            # A file written before replicas has one URL under "control_plane".
            planes = data["control_planes"] if "control_planes" in data else [data["control_plane"]]
            if not (
                isinstance(planes, list) and planes and all(isinstance(u, str) for u in planes)
            ):
                raise ValueError("control_planes must be a list of URLs")
            return cls(
                control_planes=tuple(planes),
                **{name: str(data[name]) for name in ("credential", "key", "name")},
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise BlackRoadError(f"{path} is not a node's membership file ({exc!r})") from None

    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the old file or the new one), readable by us only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        # Created 0600: the secrets are never readable by others, not even for a moment.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(dataclasses.asdict(self), out, indent=2)
            fsync_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _refusal(control_plane: str, response: httpx.Response) -> str:
    return (
        f"the control plane at {control_plane} answered {response.status_code}: "
        f"{error_message(response.content)}"
    )


def _unreachable(control_plane: str, exc: httpx.TransportError) -> str:
    return f"the control plane at {control_plane} is unreachable: {type(exc).__name__}"


def join(
    control_planes: Sequence[str],
    token: str,
    name: str,
    url: str,
    key: str,
    machine: Capabilities,
    credential: str | None = None,
) -> str:
    """Join the fleet through the first of ``control_planes`` that answers; the new credential.

    A replica unreachable or failing (5xx) passes the join on to the next;
    any other refusal is the fleet's answer. ``credential``: the one this
    node holds as ``name`` (joining again under its own name: the token is
    then not needed, nor used). A credential the control plane no longer
    knows (the node was removed) leaves the token to join with.
    """
    body: dict[str, object] = {
        "token": token, "name": name, "url": url, "key": key, "capabilities": machine,
    }  # fmt: skip
    if credential is not None:
        body["credential"] = credential
    timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
    problems: list[str] = []
    for control_plane in control_planes:
        try:
            response = httpx.post(f"{control_plane}/api/fleet/join", json=body, timeout=timeout)
        except httpx.TransportError as exc:
            problems.append(_unreachable(control_plane, exc))
            continue
        if response.status_code >= 500:
            problems.append(_refusal(control_plane, response))
            continue
        if response.status_code != 201:
            raise HTTPError(response.status_code, _refusal(control_plane, response))
        issued: str = response.json()["credential"]
        return issued
    raise ServiceUnavailable("; ".join(problems))


async def heartbeat_forever(
    membership: NodeFile, state: Callable[[], Awaitable[Report]], every: float
) -> None:
    """Report ``state()`` to the control plane every ``every`` seconds while the node runs.

    Each beat goes to the replica that took the last one; one unreachable or
    failing (5xx) passes it on to the next at once, round the list. A failure
    is logged when it starts or changes (then at debug level while it lasts)
    and the next beat tries again, so a control plane that is restarted, or
    unreachable for a while, finds the node again by itself.
    """
    planes = membership.control_planes
    current = 0  # the replica that took the last beat: the next one starts there
    headers = {"Authorization": f"Bearer {membership.credential}"}
    timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
    last: tuple[str, str | None] = ("", "")  # the last beat's replica and failure (None: none)
    async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
        while True:
            try:
                body = await state()
                current, problem = await _beat(client, planes, current, body)
            except Exception as exc:  # whatever it is, the node serves on; the next beat retries
                problem = f"{type(exc).__name__}: {exc}"
            outcome = (planes[current], problem)
            if outcome == last:
                if problem is not None:
                    log.debug("heartbeat failed again: %s", problem)
            elif problem is None:
                log.info("in the fleet of %s as %r", planes[current], membership.name)
            else:
                log.warning("heartbeat failed, retrying every %ss: %s", every, problem)
            last = outcome
            await asyncio.sleep(every)


async def _beat(
    client: httpx.AsyncClient, planes: Sequence[str], start: int, body: Report
) -> tuple[int, str | None]:
    """One heartbeat, to the first replica from ``start`` on that takes it.

    The replica that answered (or ``start``, if none did) and what went wrong, if anything.
    """
    problems: list[str] = []
    for index in [*range(start, len(planes)), *range(start)]:
        target = planes[index]
        try:
            response = await client.post(f"{target}/api/fleet/heartbeat", json=body)
        except httpx.TransportError as exc:
            problems.append(_unreachable(target, exc))
            continue
        if response.status_code >= 500:
            problems.append(_refusal(target, response))
            continue
        # Any other answer is the fleet's (one database behind every replica): no other differs.
        if response.status_code == 401:
            hint = " (removed from the fleet? join again with --token)"
            return index, _refusal(target, response) + hint
        return index, None if response.status_code == 200 else _refusal(target, response)
    return start, "; ".join(problems)
