"""The reference for ``bench_app.py``: a bare python-socketio ``AsyncServer`` that emits a payload to a
room when told to over HTTP, with no library, no database and no auth check.

``POST /emit`` with ``{"room", "event", "payload"}`` emits ``payload`` as ``event`` to ``room`` and
answers once the emit returned, as the app answers once its bridge emitted. A client connects with
``auth={"user": "<room>"}`` and is put in that room. With ``BENCH_REDIS_URL`` set, the server uses
python-socketio's Redis manager (several processes, clients connected to any of them) on its own channel.
"""

from __future__ import annotations

import os
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_redis = os.environ.get("BENCH_REDIS_URL")
# Its own channel: the app's nodes may share the Redis server, and must not emit these.
_manager = socketio.AsyncRedisManager(_redis, channel="bench-bare") if _redis else None
sio = socketio.AsyncServer(async_mode="asgi", client_manager=_manager)


async def connect(sid: str, environ: dict[str, Any], auth: object) -> bool:
    """Put the client in the room its ``auth`` names."""
    user = auth.get("user") if isinstance(auth, dict) else None
    if not isinstance(user, str) or not user:
        return False
    await sio.enter_room(sid, user)
    return True


sio.on("connect", connect)


async def emit(request: Request) -> JSONResponse:
    """Emit the body's payload to the body's room."""
    body = await request.json()
    await sio.emit(body["event"], body["payload"], to=body["room"])
    return JSONResponse({"emitted": body["event"]})


app = socketio.ASGIApp(sio, Starlette(routes=[Route("/emit", emit, methods=["POST"])]))
