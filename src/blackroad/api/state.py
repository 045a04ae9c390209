"""Typed access, for route handlers, to what the application holds."""

from __future__ import annotations

from fastapi import Request

from blackroad.config import Settings
from blackroad.identity.directory import Directory
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
