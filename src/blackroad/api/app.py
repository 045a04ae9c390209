"""The ASGI application: one server for every API, built from ``Settings``.

Middleware, outermost first: the client behind a trusted proxy (its
``X-Forwarded-For``), then request recording (every request, whatever its
outcome, a refused oversized body included), then the browser guard
(403 for a foreign Host name or a cross-site unsafe request: DNS rebinding
and forged requests from other pages), then the body size limit (413 before
anything is buffered), then the refusal of a JSON body that is not text (a
lone surrogate).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse, Response

from blackroad import __version__, bounded
from blackroad.agents.definitions import Agents
from blackroad.agents.journal import Journal
from blackroad.agents.mcp import McpServers
from blackroad.agents.runner import Runner
from blackroad.agents.sandboxes import Sandboxes
from blackroad.agents.toolbox import Toolbox
from blackroad.api import (
    account,
    admin,
    agents,
    auth,
    cost,
    ollama,
    ollama_models,
    openai,
    operations,
    usage,
)
from blackroad.api import (
    audit as audit_api,
)
from blackroad.api import fleet as fleet_api
from blackroad.api import knowledge as knowledge_api
from blackroad.api import mcp as mcp_api
from blackroad.api import memory as memory_api
from blackroad.api.errors import error_response, install_error_handlers
from blackroad.api.limits import BodyLimitMiddleware
from blackroad.api.proxies import ProxyHeaders, TrustedProxies
from blackroad.api.recording import RecordingMiddleware
from blackroad.api.surrogates import SurrogateGuard
from blackroad.audit.log import AuditLog, checkpoints
from blackroad.browser_guard import AllowedHosts, BrowserGuard
from blackroad.config import Settings
from blackroad.engines.llamacpp import LlamaCppOptions
from blackroad.engines.pool import EnginePool
from blackroad.fleet.control_planes import GONE_AFTER, Presence, keep_present, served_url
from blackroad.fleet.members import LocalMember
from blackroad.fleet.nodes import Nodes
from blackroad.fleet.placement import Placements, Placer
from blackroad.fleet.probes import watch
from blackroad.fleet.router import Router
from blackroad.identity.directory import Directory
from blackroad.identity.lockout import Lockout
from blackroad.identity.quotas import Quotas
from blackroad.memory.conversations import Conversations
from blackroad.memory.facts import Memories, MemoryStore
from blackroad.memory.knowledge import KnowledgeBases
from blackroad.models.catalog import Catalog
from blackroad.service.context import ChatContext
from blackroad.service.inference import Inference
from blackroad.store.database import Database
from blackroad.store.leadership import AUDIT_CHECKPOINTS, PLACEMENT, Leadership
from blackroad.store.objects import ObjectStore
from blackroad.store.readiness import DatabaseReadiness
from blackroad.usage.metrics import Metrics, NodeLoad
from blackroad.web import routes as desktop


def router_loads(router: Router) -> list[NodeLoad]:
    return [
        NodeLoad(t.name, t.breaker.state == "closed", t.outstanding, t.speed)
        for t in router.targets.values()
    ]


def create_app(settings: Settings) -> FastAPI:
    proxies = TrustedProxies.parse(settings.trusted_proxies)  # a wrong one stops it first
    bounded.configure(settings.bounds)
    database = Database(settings.database)
    options = LlamaCppOptions(
        n_ctx=settings.num_ctx,
        n_threads=settings.num_threads,
        n_batch=settings.num_batch,
        max_queue=settings.max_queue,
        retry_after=settings.retry_after,
        n_parallel=settings.num_parallel,
        n_cached=settings.num_cached,
    )
    pool = EnginePool(options, settings.max_loaded_models, settings.max_memory_bytes)
    catalog = Catalog(settings.models_dir, database)
    router = Router(
        [LocalMember(settings.node_name, pool)],
        queue_size=settings.max_queue,
        queue_timeout=settings.fleet_queue_timeout,
    )
    service = Inference(catalog, pool, router)
    metrics = Metrics(pool.health, lambda: router_loads(router), lambda: router.waiting)
    fleet = Nodes(database)
    placer = Placer(Placements(database), settings.registry, settings.registry_key)
    audit = AuditLog.of(settings, database)
    bases = KnowledgeBases(database, ObjectStore(settings.documents_dir), service.vectors)
    conversations = Conversations(database)
    memories = Memories(
        MemoryStore(database), service, settings.embedding_model, settings.memory_model
    )
    mcp_servers = McpServers(database)
    sandboxes = Sandboxes(settings.agents_dir)
    agent_definitions = Agents(database, sandboxes)
    toolbox = Toolbox(settings.agent_hosts, bases, memories, sandboxes, mcp=mcp_servers)
    journal = Journal(database, audit)
    directory, quotas = Directory(database), Quotas(database.tokens_since)
    runner = Runner(journal, service, toolbox, directory.acting_user, quotas)
    readiness = DatabaseReadiness(database.engine)
    leadership = Leadership(database, lease=GONE_AFTER)
    presence = Presence(database, settings.node_name, served_url(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(audit.check_key)  # the log's own key, or no start at all
        pool.start()
        await asyncio.to_thread(bases.sweep)  # before any upload can be in flight
        await asyncio.to_thread(agent_definitions.sweep_sandboxes)  # before any run can write
        runner.resume()  # runs a stop or a crash cut short go on from their last step
        await asyncio.to_thread(leadership.refresh)  # duties no other replica leads are ours
        await asyncio.to_thread(presence.register, leadership.led())
        beater = asyncio.create_task(keep_present(presence, leadership, readiness))
        prober = asyncio.create_task(
            watch(
                fleet,
                router,
                placer,
                settings.fleet_probe_seconds,
                settings.node_concurrency,
                places=lambda: leadership.leads(PLACEMENT),
            )
        )
        signer = asyncio.create_task(
            checkpoints(
                audit,
                settings.audit_checkpoint_records,
                settings.audit_checkpoint_seconds,
                signs=lambda: leadership.leads(AUDIT_CHECKPOINTS),
            )
        )
        yield
        for task in (beater, prober, signer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(leadership.close)  # another replica takes the duties at once
        await asyncio.to_thread(presence.leave)
        await runner.close()  # before the records are signed: its steps are audited
        await asyncio.to_thread(audit.checkpoint)  # the last records, signed on the way out
        await service.close()
        bounded.close()
        readiness.close()
        database.close()

    # No /docs or /redoc: their pages load scripts from a CDN, and nothing here may.
    app = FastAPI(
        title="BlackRoad OS",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.inference = service
    app.state.metrics = metrics
    app.state.directory = directory
    app.state.nodes = fleet
    app.state.router = router
    app.state.audit = audit
    app.state.knowledge = bases
    app.state.conversations = conversations
    app.state.memories = memories
    app.state.agents = agent_definitions
    app.state.journal = journal
    app.state.runner = runner
    app.state.toolbox = toolbox
    app.state.mcp_servers = mcp_servers
    app.state.chat_context = ChatContext(bases, conversations, memories)
    app.state.placer = placer
    app.state.quotas = quotas
    app.state.readiness = readiness
    app.state.lockout = Lockout(
        settings.lockout_slow_after,
        settings.lockout_attempts,
        settings.lockout_window,
        settings.lockout_seconds,
    )
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(ollama.router)
    app.include_router(ollama_models.router)
    app.include_router(operations.router)
    app.include_router(usage.router)
    app.include_router(cost.router)
    app.include_router(auth.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    app.include_router(fleet_api.router)
    app.include_router(audit_api.router)
    app.include_router(knowledge_api.router)
    app.include_router(memory_api.router)
    app.include_router(agents.router)
    app.include_router(mcp_api.router)
    app.include_router(desktop.router)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def root(request: Request) -> Response:
        if desktop.wants_html(request):
            return desktop.desktop_page(request)
        # Ollama's answer, which clients use as a liveness probe.
        return PlainTextResponse("Ollama is running", headers={"Vary": "Accept"})

    # add_middleware wraps: the last one added is the outermost.
    app.add_middleware(SurrogateGuard)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides=(
            (r"/api/blobs/", None),
            (r"/api/kb/[^/]+/documents$", settings.max_upload_bytes),
        ),
    )
    app.add_middleware(
        BrowserGuard,
        hosts=AllowedHosts.parse(settings.allowed_hosts, settings.host),
        respond=error_response,
    )
    app.add_middleware(
        RecordingMiddleware,
        database=database,
        metrics=metrics,
        node=settings.node_name,
        audit=audit,
        text_limit=settings.max_body_bytes,
        unrecorded=frozenset({"/api/fleet/heartbeat", "/health/live", "/health/ready"}),
    )
    app.add_middleware(ProxyHeaders, proxies=proxies)
    return app
