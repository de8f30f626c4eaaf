"""The Socket.IO bridge: each event, to each recipient's room, with that recipient's payload.

Needs the ``socketio`` extra (``pip install 'broadcast-lifecycle[socketio]'``, python-socketio). An
asyncio app (an ``AsyncServer`` mounted with ``socketio.ASGIApp``)::

    import socketio
    from broadcast_lifecycle import AsyncBroadcastLifecycle, AsyncSocketIOBridge, Recipient

    sio = socketio.AsyncServer(async_mode="asgi")  # on many nodes: client_manager=socketio.AsyncRedisManager(url)
    bridge = AsyncSocketIOBridge(sio)              # rooms "customer:<id>", "transporter:<id>"
    lifecycle = AsyncBroadcastLifecycle(store)

    async def startup() -> None:                   # in the app's lifespan: the loop runs
        bridge.connect(lifecycle)

    @sio.event
    async def connect(sid, environ, auth):
        user = authenticate(auth)                  # the host's own check of the client's token
        await bridge.enter_rooms(sid, Recipient(user.role, user.id))

A sync app uses :class:`SocketIOBridge` on a ``socketio.Server`` the same way (``enter_rooms`` is
then a plain call). Either bridge also takes a write-only client manager in place of the server
(``socketio.RedisManager(url, write_only=True)``, ``socketio.AsyncRedisManager(url, write_only=True)``),
so a process without a socket server (a relay worker) emits to clients connected anywhere.

The bridge is a bus receiver under one durable name (``broadcast_lifecycle.socketio`` unless told
otherwise): the outbox tracks it like any receiver, so an emit that raises leaves the event for the
relay, which retries the bridge alone. Every recipient of an event gets the same payload, so the
bridge emits each event once, to the rooms of all its recipients: python-socketio sends it once to each
socket in any of them (a room shared by several recipients, a user in both roles), and a room hook that
raises leaves nobody served. Delivery is at least once all the same (a relay's retry after a crash), so
clients de-duplicate on ``eventId`` (or keep the highest ``version``). What "delivered" means with each
server and client manager is in docs/socketio.md.

``payload=`` adds host data to what each recipient gets (a pickup, a fare): a function of the event,
the recipient and the library's payload that returns the payload to send. The bridge then emits once
per distinct payload, to the rooms of the recipients that get it, after computing every one of them:
a hook that raises sends nothing.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InvalidArgument
from .events import BroadcastEvent, EventPayload, Recipient

if TYPE_CHECKING:
    from .bus import Receiver, SignalBus

__all__ = ["DEFAULT_BRIDGE_NAME", "AsyncPayloadHook", "AsyncSocketIOBridge", "PayloadHook", "RoomNamer",
           "SocketIOBridge", "recipient_room"]

DEFAULT_BRIDGE_NAME = "broadcast_lifecycle.socketio"
"""The durable receiver name the bridges connect under, the same for the sync and the async one (the
outbox then records one delivery per event however many processes run a bridge)."""

RoomNamer = Callable[[Recipient], str]
"""The room-naming hook: the Socket.IO room a recipient's copy of an event is emitted to."""

PayloadHook = Callable[[BroadcastEvent, Recipient, EventPayload], Mapping[str, Any]]
"""The payload hook of :class:`SocketIOBridge`: ``(event, recipient, payload) -> payload to send``
(the library's payload is the recipient's own copy: change it or build another)."""

AsyncPayloadHook = Callable[[BroadcastEvent, Recipient, EventPayload],
                            "Mapping[str, Any] | Awaitable[Mapping[str, Any]]"]
"""The payload hook of :class:`AsyncSocketIOBridge`: a plain function or a coroutine function."""


def recipient_room(recipient: Recipient) -> str:
    """The default room of a recipient: ``"customer:<id>"`` or ``"transporter:<id>"``, one room per
    user in each role (customer and transporter ids may come from different tables and collide; a
    user who acts in both roles enters both rooms)."""
    return f"{recipient.role}:{recipient.id}"


class _HasBus(Protocol):
    @property
    def bus(self) -> SignalBus: ...


class _Bridge:
    """What both bridges share: the target, the room hook, the namespace and the receiver name."""

    _coroutine_emit: bool
    _kind_label: str
    _other_label: str

    def __init__(self, server: Any, *, room: RoomNamer = recipient_room, namespace: str = "/",
                 name: str = DEFAULT_BRIDGE_NAME, payload: AsyncPayloadHook | None = None) -> None:
        emit = getattr(server, "emit", None)
        if not callable(emit) or inspect.iscoroutinefunction(emit) is not self._coroutine_emit:
            raise InvalidArgument(f"server must be {self._kind_label}, got {server!r} "
                                  f"(for {self._other_label} use the other bridge)")
        if not callable(room):
            raise InvalidArgument(f"room must be a function of a Recipient returning a room name, got {room!r}")
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise InvalidArgument(f"namespace must be a Socket.IO namespace starting with '/', got {namespace!r}")
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"name must be a non-empty string (the receiver's durable name), got {name!r}")
        if payload is not None and not callable(payload):
            raise InvalidArgument(f"payload must be a function (event, recipient, payload) -> payload, got {payload!r}")
        self.server = server
        """The ``socketio`` server (or write-only client manager) the bridge emits through."""
        self.room = room
        """The room-naming hook."""
        self.namespace = namespace
        """The Socket.IO namespace events are emitted in."""
        self.name = name
        """The durable name the bridge is connected to the bus under."""
        self.payload = payload
        """The payload hook (``None``: every recipient gets the library's payload)."""

    def connect(self, lifecycle: SignalBus | _HasBus, *, kind: str | None = None) -> Callable[[], None]:
        """Connect the bridge to ``lifecycle``'s bus (or to a ``SignalBus``) for every event, or only
        for events of ``kind``; returns the function that disconnects it."""
        from .bus import SignalBus

        bus = lifecycle if isinstance(lifecycle, SignalBus) else getattr(lifecycle, "bus", None)
        if not isinstance(bus, SignalBus):
            raise InvalidArgument(f"lifecycle must be a lifecycle (sync or async) or a SignalBus, got {lifecycle!r}")
        receiver: Receiver = self  # type: ignore[assignment]  # each subclass defines __call__ (sync or async)
        return bus.connect(receiver, name=self.name, kind=kind)

    def rooms(self, recipients: tuple[Recipient, ...]) -> list[str]:
        """The rooms of ``recipients``, in order (each once)."""
        rooms: dict[str, None] = {}  # ordered and each once, in linear time (an offer may go to thousands)
        for recipient in recipients:
            if not isinstance(recipient, Recipient):
                raise InvalidArgument(f"recipients must be Recipient(role, id) values, got {recipient!r}")
            rooms[self.room(recipient)] = None
        return list(rooms)

    def _emits(self, payloads: list[tuple[Recipient, Any]]) -> list[tuple[Mapping[str, Any], list[str]]]:
        """Each distinct payload with the rooms of the recipients that get it (``payloads``: each
        recipient's), in the order they first appear."""
        groups: dict[str, tuple[Mapping[str, Any], list[Recipient]]] = {}
        for recipient, payload in payloads:
            if not isinstance(payload, Mapping):
                raise InvalidArgument(f"the payload hook must return a mapping (the JSON payload), got {payload!r:.80}")
            key = json.dumps(payload, sort_keys=True, default=str)
            groups.setdefault(key, (payload, []))[1].append(recipient)
        return [(payload, self.rooms(tuple(recipients))) for payload, recipients in groups.values()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, namespace={self.namespace!r})"


class AsyncSocketIOBridge(_Bridge):
    """Emits each event through a ``socketio.AsyncServer`` (or an ``AsyncRedisManager(write_only=True)``).

    ``room`` names a recipient's room (:func:`recipient_room` by default), ``namespace`` is the
    Socket.IO namespace emitted in, ``name`` the durable receiver name the outbox tracks the bridge by
    (keep it the same in every process).

    A coroutine receiver: connect it while the server's loop runs (in the app's lifespan); it is
    awaited there, also when the event comes from a sync lifecycle in another thread (see
    :mod:`~broadcast_lifecycle.loop_receivers`).
    """

    _coroutine_emit = True
    _kind_label = "a socketio.AsyncServer or an async client manager (a coroutine emit)"
    _other_label = "a socketio.Server"

    async def __call__(self, event: BroadcastEvent) -> None:
        """Emit ``event`` once, to the rooms of all its recipients (see :meth:`rooms`); with a payload
        hook, once per distinct payload (every payload computed before the first emit)."""
        if self.payload is None:
            rooms = self.rooms(event.recipients)
            if rooms:  # never an empty list: python-socketio would take it as "every socket"
                await self.server.emit(event.name, event.payload(), to=rooms, namespace=self.namespace)
            return
        payloads: list[tuple[Recipient, Any]] = []
        for copy in event.addressed():
            made = self.payload(event, copy.recipient, copy.payload)
            payloads.append((copy.recipient, await made if inspect.isawaitable(made) else made))
        for payload, rooms in self._emits(payloads):
            await self.server.emit(event.name, payload, to=rooms, namespace=self.namespace)

    async def enter_rooms(self, sid: str, *recipients: Recipient) -> None:
        """Put the connected socket ``sid`` into the room of each of ``recipients`` (the identities
        the host authenticated it as)."""
        for room in self.rooms(recipients):
            await self.server.enter_room(sid, room, namespace=self.namespace)

    async def leave_rooms(self, sid: str, *recipients: Recipient) -> None:
        """Take the socket ``sid`` out of the room of each of ``recipients``."""
        for room in self.rooms(recipients):
            await self.server.leave_room(sid, room, namespace=self.namespace)


class SocketIOBridge(_Bridge):
    """Emits each event through a sync ``socketio.Server`` (or a ``RedisManager(write_only=True)``).

    ``room`` names a recipient's room (:func:`recipient_room` by default), ``namespace`` is the
    Socket.IO namespace emitted in, ``name`` the durable receiver name the outbox tracks the bridge by
    (keep it the same in every process).
    """

    _coroutine_emit = False
    _kind_label = "a socketio.Server or a sync client manager (a plain emit)"
    _other_label = "a socketio.AsyncServer"

    def __init__(self, server: Any, *, room: RoomNamer = recipient_room, namespace: str = "/",
                 name: str = DEFAULT_BRIDGE_NAME, payload: PayloadHook | None = None) -> None:
        if payload is not None and inspect.iscoroutinefunction(payload):
            raise InvalidArgument("payload must be a plain function for SocketIOBridge (a coroutine function is "
                                  "for AsyncSocketIOBridge)")
        super().__init__(server, room=room, namespace=namespace, name=name, payload=payload)

    def __call__(self, event: BroadcastEvent) -> None:
        """Emit ``event`` once, to the rooms of all its recipients (see :meth:`rooms`); with a payload
        hook, once per distinct payload (every payload computed before the first emit)."""
        if self.payload is None:
            rooms = self.rooms(event.recipients)
            if rooms:  # never an empty list: python-socketio would take it as "every socket"
                self.server.emit(event.name, event.payload(), to=rooms, namespace=self.namespace)
            return
        payloads = [(copy.recipient, self.payload(event, copy.recipient, copy.payload)) for copy in event.addressed()]
        for payload, rooms in self._emits(payloads):
            self.server.emit(event.name, payload, to=rooms, namespace=self.namespace)

    def enter_rooms(self, sid: str, *recipients: Recipient) -> None:
        """Put the connected socket ``sid`` into the room of each of ``recipients``."""
        for room in self.rooms(recipients):
            self.server.enter_room(sid, room, namespace=self.namespace)

    def leave_rooms(self, sid: str, *recipients: Recipient) -> None:
        """Take the socket ``sid`` out of the room of each of ``recipients``."""
        for room in self.rooms(recipients):
            self.server.leave_room(sid, room, namespace=self.namespace)
