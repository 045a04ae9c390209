"""Typed access, for route handlers, to what the application holds."""

from __future__ import annotations

from fastapi import Request

from blackroad.agents.definitions import Agents
from blackroad.agents.journal import Journal
from blackroad.agents.mcp import McpServers
from blackroad.agents.runner import Runner
from blackroad.agents.toolbox import Toolbox
from blackroad.audit.log import AuditLog
from blackroad.config import Settings
from blackroad.engines.remote import FORWARDED_HEADER
from blackroad.fleet.nodes import Nodes
from blackroad.fleet.placement import Placer
from blackroad.fleet.router import Router
from blackroad.identity.directory import Directory
from blackroad.identity.lockout import Lockout
from blackroad.identity.quotas import Quotas
from blackroad.memory.conversations import Conversations
from blackroad.memory.facts import Memories
from blackroad.memory.knowledge import KnowledgeBases
from blackroad.service.context import ChatContext
from blackroad.service.inference import Inference
from blackroad.store.database import Database


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def inference(request: Request) -> Inference:
    value: Inference = request.app.state.inference
    return value


def directory(request: Request) -> Directory:
    value: Directory = request.app.state.directory
    return value


def database(request: Request) -> Database:
    value: Database = request.app.state.database
    return value


def quotas(request: Request) -> Quotas:
    value: Quotas = request.app.state.quotas
    return value


def lockout(request: Request) -> Lockout:
    value: Lockout = request.app.state.lockout
    return value


def nodes(request: Request) -> Nodes:
    value: Nodes = request.app.state.nodes
    return value


def fleet_router(request: Request) -> Router:
    value: Router = request.app.state.router
    return value


def placer(request: Request) -> Placer:
    value: Placer = request.app.state.placer
    return value


def audit_log(request: Request) -> AuditLog:
    value: AuditLog = request.app.state.audit
    return value


def forwarded(request: Request) -> bool:
    """Did another node's router send this request here (so it must be served here)?"""
    return FORWARDED_HEADER in request.headers


def knowledge(request: Request) -> KnowledgeBases:
    value: KnowledgeBases = request.app.state.knowledge
    return value


def chat_context(request: Request) -> ChatContext:
    value: ChatContext = request.app.state.chat_context
    return value


def conversations(request: Request) -> Conversations:
    value: Conversations = request.app.state.conversations
    return value


def memories(request: Request) -> Memories:
    value: Memories = request.app.state.memories
    return value


def agents(request: Request) -> Agents:
    value: Agents = request.app.state.agents
    return value


def journal(request: Request) -> Journal:
    value: Journal = request.app.state.journal
    return value


def runner(request: Request) -> Runner:
    value: Runner = request.app.state.runner
    return value


def toolbox(request: Request) -> Toolbox:
    value: Toolbox = request.app.state.toolbox
    return value


def mcp_servers(request: Request) -> McpServers:
    value: McpServers = request.app.state.mcp_servers
    return value
