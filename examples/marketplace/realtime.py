"""The Socket.IO side: who may connect, which room they join, and the bus wired to the server.

A client connects with ``auth={"token": <token>}``; a missing, forged or expired token refuses the connection
(the client's ``connect_error``). An accepted client joins its user's room (``customer:c-1``,
``transporter:t-2``: the bridge's default room per recipient), so it gets every event addressed to
that user, on every tab and device. The library's :class:`~broadcast_lifecycle.AsyncSocketIOBridge`
emits each event to each recipient's room with that recipient's payload, under the event's wire
name (``BOOKING_OFFERED``, ``BROADCAST_STATE_CHANGED``, ...).
"""

from __future__ import annotations

from typing import Any

import socketio

from broadcast_lifecycle import AsyncSocketIOBridge, Recipient

from .auth import Unauthorized, verify

__all__ = ["create_server"]


def create_server(secret: bytes, *, client_manager: Any = None) -> tuple[socketio.AsyncServer, AsyncSocketIOBridge]:
    """An ``AsyncServer`` for ASGI that admits only clients with a token signed with ``secret``, and
    the bridge that emits the lifecycle's events through it (connect it in the lifespan).

    Pass python-socketio's ``AsyncRedisManager`` as ``client_manager`` to run several app processes.
    """
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=client_manager)
    bridge = AsyncSocketIOBridge(sio)

    async def connect(sid: str, _environ: dict[str, Any], auth: object = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            user = verify(token, secret)
        except Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from exc
        await bridge.enter_rooms(sid, Recipient(user.role, user.id))

    async def barrier(_sid: str, _data: object = None) -> bool:
        # Answered after everything emitted to this client before it (one connection delivers in
        # order): a client's way to know it has every event of the requests it has made.
        return True

    sio.on("connect", connect)
    sio.on("barrier", barrier)
    return sio, bridge
