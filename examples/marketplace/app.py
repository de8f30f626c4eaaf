"""The ASGI app: Starlette for HTTP and the page, python-socketio's ``AsyncServer`` around it.

Its lifespan migrates the database, opens the async store on the app's models, adds the host
guards, connects the bus to the Socket.IO server, and runs the expiry sweeper and the outbox relay
(``lifecycle_tasks``) for as long as the app serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import socketio
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from broadcast_lifecycle import AsyncBroadcastLifecycle, AsyncSQLAlchemyStore, lifecycle_tasks

from . import errors
from .access import install_guards
from .api import routes
from .commands import Marketplace
from .db import migrate
from .models import MODELS
from .realtime import create_server
from .settings import Settings, async_url

__all__ = ["create_app", "from_env"]

STATIC = Path(__file__).resolve().parent / "static"


async def _index(_request: object) -> FileResponse:
    return FileResponse(STATIC / "index.html")


def create_app(settings: Settings, *, client_manager: Any = None) -> socketio.ASGIApp:
    """The whole app for ``settings`` (``client_manager``: see :func:`marketplace.realtime.create_server`)."""
    if client_manager is None and settings.redis_url:
        client_manager = socketio.AsyncRedisManager(settings.redis_url, channel=settings.redis_channel)
    sio, bridge = create_server(settings.secret, client_manager=client_manager)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.migrate:
            await asyncio.to_thread(migrate, settings.database_url)
        engine = create_async_engine(async_url(settings.database_url))
        store = AsyncSQLAlchemyStore(engine, models=MODELS)
        lifecycle = AsyncBroadcastLifecycle(store)
        install_guards(lifecycle)
        bridge.connect(lifecycle)
        app.state.marketplace = Marketplace(settings, lifecycle, engine)
        try:
            relay = lifecycle.relay(grace=timedelta(seconds=settings.relay_grace))
            async with lifecycle_tasks(lifecycle, sweep_every=settings.sweep_every, relay_every=settings.relay_every,
                                       relay=relay):
                yield
        finally:
            await store.close()
            await engine.dispose()

    handlers: dict[Any, Any] = dict.fromkeys(errors.STATUS, errors.handle)
    web = Starlette(
        routes=[*routes, Route("/", _index), Mount("/static", StaticFiles(directory=STATIC), name="static")],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    return socketio.ASGIApp(sio, other_asgi_app=web)


def from_env() -> socketio.ASGIApp:
    """The app as the environment configures it: ``uvicorn --factory marketplace.app:from_env``."""
    return create_app(Settings.from_env())
