"""The Socket.IO side: who may connect, which room they join, and the bus wired to the server.

A client connects with ``auth={"token": <token>}``; a missing or forged token refuses the connection
(the client's ``connect_error``). An accepted client joins its user's room (``customer:c-1``,
``transporter:t-2``), so it gets every event addressed to that user on every tab and device. Each
event goes to each recipient's room with that recipient's payload; the event's name is the wire
name (``BOOKING_OFFERED``, ``BROADCAST_STATE_CHANGED``, ...).
"""

from __future__ import annotations

from typing import Any

import socketio

from broadcast_lifecycle import AsyncBroadcastLifecycle, BroadcastEvent

from .auth import Unauthorized, User, verify

__all__ = ["RECEIVER_NAME", "connect_bus", "create_server"]

RECEIVER_NAME = "marketplace.socketio"
"""The bridge's durable name in the outbox (the same in every process)."""


def create_server(secret: bytes, *, client_manager: Any = None) -> socketio.AsyncServer:
    """An ``AsyncServer`` for ASGI that admits only clients with a token signed with ``secret``.

    Pass python-socketio's ``AsyncRedisManager`` as ``client_manager`` to run several app processes.
    """
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=client_manager)

    async def connect(sid: str, _environ: dict[str, Any], auth: object = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            user = verify(token, secret)
        except Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from exc
        await sio.save_session(sid, {"user": user})
        await sio.enter_room(sid, user.room)

    sio.on("connect", connect)
    return sio


def connect_bus(lifecycle: AsyncBroadcastLifecycle, sio: socketio.AsyncServer) -> None:
    """Send every event of the lifecycle to its recipients' rooms (call it while the loop runs)."""

    async def emit(event: BroadcastEvent) -> None:
        for copy in event.addressed():
            room = User(copy.recipient.id, copy.recipient.role).room
            await sio.emit(copy.payload["event"], dict(copy.payload), room=room)

    lifecycle.bus.connect(emit, name=RECEIVER_NAME)
