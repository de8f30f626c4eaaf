"""The bridge's payload hook, with real python-socketio servers and clients: host data reaches each
recipient in its own payload, recipients with the same payload share one emit, and a hook that
raises sends nothing (the event waits in the outbox for the relay)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import socketio
from socket_nodes import FLUSH, AsgiNode, Heard, hear

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSocketIOBridge,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    BroadcastLifecycle,
    EventPayload,
    InMemoryStore,
    InvalidArgument,
    Recipient,
    SocketIOBridge,
)

USERS = [("customer", "c-1"), ("transporter", "t-1"), ("transporter", "t-2"), ("transporter", "t-3")]
"""c-1's booking is offered to t-1 and t-2; t-3 takes no part in it."""

DISTANCE_KM = {"t-1": 2, "t-2": 9}
"""The host's own data per transporter (how far each is from the pickup)."""


async def with_ride(event: BroadcastEvent, recipient: Recipient, payload: EventPayload) -> dict[str, Any]:
    """A coroutine hook: the pickup for everyone, and each transporter's own distance to it."""
    await asyncio.sleep(0)  # a host would read its database here
    extra: dict[str, Any] = {"pickup": "Dock 4"}
    if recipient.role == "transporter":
        extra["distanceKm"] = DISTANCE_KM[recipient.id]
    return {**payload, **extra}


def _serve(hook: Any) -> tuple[dict[tuple[str, str], list[Heard]], list[BroadcastEvent], list[int]]:
    """Offer and cancel a booking on an AsyncServer whose bridge has ``hook``; what each client heard,
    the events, and how many pending outbox entries were left."""
    sio = socketio.AsyncServer(async_mode="asgi")
    bridge = AsyncSocketIOBridge(sio, payload=hook)
    lifecycles: list[AsyncBroadcastLifecycle] = []
    events: list[BroadcastEvent] = []
    pending: list[int] = []
    store = InMemoryStore()

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> None:
        await bridge.enter_rooms(sid, Recipient(auth["role"], auth["user"]))  # type: ignore[arg-type]

    async def setup() -> None:
        lifecycle = AsyncBroadcastLifecycle(store)
        lifecycle.bus.connect(events.append, name="tests.events")
        bridge.connect(lifecycle)
        lifecycles.append(lifecycle)

    async def drive() -> None:
        bookings = lifecycles[0].kind("booking")
        booking = await bookings.create("c-1")
        await bookings.start_broadcast(booking.id, ["t-1", "t-2"])
        await bookings.cancel(booking.id, actor="c-1")
        pending.append(len(store.pending_events(100)))
        await sio.emit(FLUSH)

    with AsgiNode(socketio.ASGIApp(sio), setup) as node:
        heard = hear(node, USERS, drive)
    return heard, events, pending


def test_each_recipient_hears_its_own_payload_from_the_hook() -> None:
    """An async hook adds the pickup for everyone and each transporter's own distance: each client hears
    the library's payload plus exactly its own data; a non-recipient hears nothing."""
    heard, events, pending = _serve(with_ride)
    assert pending == [0]
    for (role, user), got in heard.items():
        wanted = [(e.name, {**copy.payload, "pickup": "Dock 4",
                            **({"distanceKm": DISTANCE_KM[user]} if role == "transporter" else {})})
                  for e in events for copy in e.addressed() if copy.recipient == Recipient(role, user)]  # type: ignore[arg-type]
        assert got == wanted, (role, user)
    assert [(name, data["distanceKm"]) for name, data in heard["transporter", "t-2"]] == [
        ("BOOKING_OFFERED", 9), ("BOOKING_CANCELLED", 9)]
    assert heard["transporter", "t-3"] == []


def test_a_hook_that_raises_sends_nothing() -> None:
    """A hook that raises for one recipient of the cancel sends that event to nobody (not even the
    recipients computed before it): the event stays pending for the relay."""

    def picky(event: BroadcastEvent, recipient: Recipient, payload: EventPayload) -> EventPayload:
        if event.name == "BOOKING_CANCELLED" and recipient.id == "t-2":
            raise RuntimeError("fares service is down")
        return payload

    heard, events, pending = _serve(picky)
    assert pending == [1]  # the cancel, waiting for the relay
    assert [e.name for e in events][-1] == "BOOKING_CANCELLED"  # committed and announced all the same
    assert all(name != "BOOKING_CANCELLED" for got in heard.values() for name, _ in got)
    assert [name for name, _ in heard["customer", "c-1"]] == ["BROADCAST_STATE_CHANGED"] * 3


def test_the_sync_bridge_emits_once_per_distinct_payload() -> None:
    """SocketIOBridge with a plain hook: recipients whose payloads are equal share one emit (to all
    their rooms), a different payload gets its own; a coroutine hook is refused at once."""
    emitted: list[tuple[str, dict[str, Any], list[str]]] = []

    class Recording:  # the emit signature of a write-only client manager
        def emit(self, event: str, data: Any, *, to: list[str], namespace: str) -> None:
            emitted.append((event, data, to))

    def by_role(event: BroadcastEvent, recipient: Recipient, payload: EventPayload) -> dict[str, Any]:
        return {**payload, "view": recipient.role}

    lifecycle = BroadcastLifecycle(InMemoryStore())
    SocketIOBridge(Recording(), payload=by_role).connect(lifecycle)
    bookings = lifecycle.kind("booking")
    booking = bookings.create("c-1")
    bookings.start_broadcast(booking.id, ["t-1", "t-2"])
    bookings.cancel(booking.id, actor="c-1")
    cancelled = [(data["view"], to) for name, data, to in emitted if name == "BOOKING_CANCELLED"]
    assert cancelled == [("customer", ["customer:c-1"]), ("transporter", ["transporter:t-1", "transporter:t-2"])]
    with pytest.raises(InvalidArgument, match="payload must be a plain function for SocketIOBridge"):
        SocketIOBridge(Recording(), payload=with_ride)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="payload must be a function"):
        AsyncSocketIOBridge(socketio.AsyncServer(), payload="pickup")  # type: ignore[arg-type]


def test_the_hook_works_on_the_sql_store_too(async_database_url: str) -> None:
    """On AsyncSQLAlchemyStore the hooked payloads reach the clients the same way (sqlite and PostgreSQL)."""
    sio = socketio.AsyncServer(async_mode="asgi")
    bridge = AsyncSocketIOBridge(sio, payload=with_ride)
    stores: list[AsyncSQLAlchemyStore] = []

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> None:
        await bridge.enter_rooms(sid, Recipient(auth["role"], auth["user"]))  # type: ignore[arg-type]

    async def setup() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_database_url)
        await store.create_all()
        stores.append(store)

    async def drive() -> None:
        lifecycle = AsyncBroadcastLifecycle(stores[0])
        bridge.connect(lifecycle)
        bookings = lifecycle.kind("booking")
        booking = await bookings.create("c-1")
        await bookings.start_broadcast(booking.id, ["t-1"])
        await bookings.activate(booking.id, ttl=timedelta(minutes=5))
        await sio.emit(FLUSH)

    with AsgiNode(socketio.ASGIApp(sio), setup) as node:
        heard = hear(node, [("transporter", "t-1")], drive)[("transporter", "t-1")]
        node.call(stores[0].close())
    assert [(name, data["pickup"], data["distanceKm"]) for name, data in heard] == [
        ("BOOKING_OFFERED", "Dock 4", 2), ("BOOKING_OFFERED", "Dock 4", 2)]
