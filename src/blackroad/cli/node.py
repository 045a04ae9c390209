"""``blackroad node``: serve this machine's models as a node of a control plane's fleet.

The node serves exactly what ``blackroad up`` serves (``serve.serve``), with
its own generated key required on every request, and heartbeats its state
to the control plane while it runs (``fleet/heartbeat.py``): to whichever
of its replicas answers, when ``--join`` lists several (comma-separated).
Joining needs a join token once; the membership is kept in
``$BLACKROAD_HOME/node.json``, so a restart without ``--token`` comes back
into the fleet by itself, and ``--token`` again joins afresh (a new
credential and a new key), under its own credential when it joins a control
plane it was in (a URL in common) under the same name.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import typer

from blackroad.cli.client import fail
from blackroad.cli.serve import HOST, PORT, console, serve
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.fleet import heartbeat
from blackroad.fleet.heartbeat import NodeFile
from blackroad.fleet.nodes import check_url

if TYPE_CHECKING:
    from fastapi import FastAPI

    from blackroad.service.inference import Inference
    from blackroad.store.database import Database

# Decode speed is reported as measured over this much of the request log.
DECODE_WINDOW = timedelta(minutes=10)


def advertised(host: str, port: int) -> str:
    """Where the control plane reaches a node bound to ``host``; a wildcard bind by host name."""
    if host in ("0.0.0.0", "::"):  # noqa: S104 (a wildcard bind is reached by its name)
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def node(
    join: str | None = typer.Option(
        None,
        "--join",
        help="The control plane's URL, or its replicas' URLs comma-separated [as joined before].",
    ),
    token: str | None = typer.Option(
        None,
        help="A join token (blackroad nodes token create), to join the first time. The process "
        "list shows it while the node runs: give tokens a short --expires-in.",
    ),
    host: str | None = HOST,
    port: int | None = PORT,
    name: str | None = typer.Option(None, help="This node's name in the fleet [the host name]."),
    advertise: str | None = typer.Option(
        None, help="The URL the control plane reaches this node at [http://HOST:PORT]."
    ),
) -> None:
    """Serve this machine's models as a node of the fleet of a control plane."""
    settings = Settings.from_env().with_overrides(host=host, port=port)
    machine = heartbeat.capabilities()
    try:
        url = check_url(advertise or advertised(settings.host, settings.port))
        stored = NodeFile.load(settings.node_file)
        control_planes = _control_planes(join) if join else None
        if token is not None:
            stored = _join(settings, control_planes, token, name, url, machine, stored)
        elif stored is None:
            fail("This machine is in no fleet yet: blackroad node --join URL --token TOKEN")
        elif control_planes not in (None, stored.control_planes):
            fail(
                f"This node is in the fleet of {','.join(stored.control_planes)}; "
                "--token joins with other URLs."
            )
        elif name not in (None, stored.name):
            fail(f"This node joined as {stored.name!r}; --token joins under another name.")
    except BlackRoadError as exc:
        fail(exc.message)
    membership = stored
    # The node's key is the server's shared key: every request must carry it. The
    # control plane reaches it by the advertised URL, whose host name it must answer.
    serving = settings.with_overrides(
        api_key=membership.key,
        node_name=membership.name,
        allowed_hosts=f"{settings.allowed_hosts},{urlsplit(url).hostname or ''}",
    )
    # httpx logs every request at INFO: one line per heartbeat is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    planes = ", ".join(membership.control_planes)
    console.print(f"Node {membership.name!r} of {planes}, reached at {url}")

    async def beat(app: FastAPI) -> None:
        await heartbeat.heartbeat_forever(
            membership, lambda: _state(app, url, machine, serving), serving.heartbeat_seconds
        )

    serve(serving, create_admin=False, alongside=beat)


def _control_planes(join: str) -> tuple[str, ...]:
    """The URLs ``--join`` lists (comma-separated), each checked, in order, once."""
    urls = [check_url(part) for part in join.split(",") if part.strip()]
    if not urls:
        fail("--join needs the control plane's URL")
    return tuple(dict.fromkeys(urls))


def _join(
    settings: Settings,
    control_planes: tuple[str, ...] | None,
    token: str,
    name: str | None,
    url: str,
    machine: heartbeat.Capabilities,
    stored: NodeFile | None,
) -> NodeFile:
    """Join with ``token``, with a fresh key; the membership, saved.

    A node joining again, as itself, presents its credential: its name is its
    own. It is the same fleet when the URLs have one in common (a replica
    added or retired); a node that joins another fleet keeps its credential
    from it.
    """
    targets = control_planes or (stored.control_planes if stored else None)
    if targets is None:
        fail("Joining needs the control plane's URL: --join URL")
    chosen = name or (stored.name if stored else settings.node_name)
    key = secrets.token_urlsafe(32)
    same_fleet = stored is not None and not set(stored.control_planes).isdisjoint(targets)
    own = stored.credential if stored and same_fleet and stored.name == chosen else None
    credential = heartbeat.join(targets, token, chosen, url, key, machine, own)
    membership = NodeFile(control_planes=targets, credential=credential, key=key, name=chosen)
    membership.save(settings.node_file)
    return membership


async def _state(
    app: FastAPI, url: str, machine: heartbeat.Capabilities, settings: Settings
) -> heartbeat.Report:
    """This node's report, read from the running app's catalog, engines and request log."""
    inference: Inference = app.state.inference
    database: Database = app.state.database
    since = datetime.now(UTC) - DECODE_WINDOW
    return heartbeat.report(
        url,
        await inference.catalog_names(),
        inference.pool.health(),
        await asyncio.to_thread(database.decode_rates, settings.node_name, since),
        machine,
        settings,
    )
