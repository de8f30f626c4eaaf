"""One app node of the many-nodes tests: an ASGI app (``uvicorn socketio_node_app:app``) with a
``socketio.AsyncServer`` behind python-socketio's ``AsyncRedisManager``, an async lifecycle on the shared
database and the bridge between them. Configured by the environment: ``BL_NODE_DATABASE_URL`` (an
async SQLAlchemy URL), ``BL_NODE_REDIS_URL``, ``BL_NODE_CHANNEL`` (the queue's channel: one per test, so
nodes of another test on the same Redis neither hear these emits nor count as subscribers) and ``BL_NODE_NAME``.

Clients name their role and user in ``auth`` (no token: this app tests the wiring, the example app
tests authentication). A ``driver`` client runs commands on this node through the ``command`` event
(acknowledged with the events the command announced, each recipient's copy) and asks for a
:data:`~socket_nodes.FLUSH` to every client on every node through ``flush``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import socketio
from socket_nodes import FLUSH

from broadcast_lifecycle import AsyncBroadcastLifecycle, AsyncSocketIOBridge, AsyncSQLAlchemyStore, Recipient

COMMANDS = frozenset({"create", "start_broadcast", "activate", "accept", "release", "cancel"})
NODE = os.environ.get("BL_NODE_NAME", "node")

manager = socketio.AsyncRedisManager(os.environ["BL_NODE_REDIS_URL"],
                                     channel=os.environ.get("BL_NODE_CHANNEL", "socketio"))
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
bridge = AsyncSocketIOBridge(sio)
store = AsyncSQLAlchemyStore.from_url(os.environ["BL_NODE_DATABASE_URL"])
lifecycle = AsyncBroadcastLifecycle(store)


async def startup() -> None:
    """Connect the bridge while the server's loop runs, then tell the test (``BL_NODE_READY_FD``) the node is ready."""
    bridge.connect(lifecycle)
    ready = os.environ.get("BL_NODE_READY_FD")
    if ready:
        os.write(int(ready), b"ready\n")
        os.close(int(ready))


async def shutdown() -> None:
    """Close the database engine."""
    await store.close()


@sio.event  # type: ignore[untyped-decorator]
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str] | None) -> bool:
    """Put a customer's or a transporter's socket into its room; a driver joins none."""
    role = (auth or {}).get("role")
    if role in ("customer", "transporter"):
        await bridge.enter_rooms(sid, Recipient(role, (auth or {})["user"]))  # type: ignore[arg-type]
        return True
    return role == "driver"


@sio.event  # type: ignore[untyped-decorator]
async def command(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    """Run one command of the lifecycle on this node; answer with its outcome and each copy of its events."""
    if data["command"] not in COMMANDS:
        raise ValueError(f"unknown command {data['command']!r}")
    kwargs = dict(data.get("kwargs", {}))
    if "ttl_seconds" in kwargs:
        kwargs["ttl"] = timedelta(seconds=kwargs.pop("ttl_seconds"))
    method = getattr(lifecycle.kind(data.get("kind", "booking")), data["command"])
    result = await method(*data.get("args", []), **kwargs)
    return {"id": result.snapshot.id, "node": NODE,
            "copies": [[copy.recipient.role, copy.recipient.id, event.name, copy.payload]
                       for event in result.events for copy in event.addressed()]}


@sio.event  # type: ignore[untyped-decorator]
async def flush(sid: str) -> str:
    """Emit the flush to every client on every node (after everything this node emitted before)."""
    await sio.emit(FLUSH)
    return NODE


app = socketio.ASGIApp(sio, on_startup=startup, on_shutdown=shutdown)
