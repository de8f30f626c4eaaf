"""The Socket.IO bridge on one node: real python-socketio servers on loopback (an AsyncServer under
uvicorn, a sync Server under wsgiref) and real clients; each recipient hears exactly its events with
its payload, in version order, and nobody else hears anything; a failed emit waits in the outbox and
the relay retries it."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import socketio
from conftest import ManualClock
from socket_nodes import FLUSH, AsgiNode, Heard, Listener, WsgiNode, hear

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSocketIOBridge,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    BroadcastLifecycle,
    EntityId,
    InMemoryStore,
    InvalidArgument,
    Recipient,
    RetryPolicy,
    SignalBus,
    SocketIOBridge,
    SQLAlchemyStore,
    recipient_room,
)
from broadcast_lifecycle.testing import EventRecorder

USERS = [("customer", "c-1"), ("customer", "c-2"), ("transporter", "t-1"), ("transporter", "t-2"),
         ("transporter", "t-3")]
"""Who connects: c-1's booking is offered to t-1 and t-2; c-2 and t-3 take no part in it."""


def expected(events: list[BroadcastEvent], role: str, user: str) -> list[Heard]:
    """What the client of ``user`` in ``role`` must hear: its copy of each event addressed to it, in order."""
    return [(event.name, dict(copy.payload)) for event in events for copy in event.addressed()
            if copy.recipient == Recipient(role, user)]  # type: ignore[arg-type]


def async_server() -> tuple[socketio.AsyncServer, AsyncSocketIOBridge]:
    """An AsyncServer whose clients name their role and user in ``auth``, and its bridge."""
    sio = socketio.AsyncServer(async_mode="asgi")
    bridge = AsyncSocketIOBridge(sio)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str] | None) -> bool:
        if not auth:
            return False
        await bridge.enter_rooms(sid, Recipient(auth["role"], auth["user"]))  # type: ignore[arg-type]
        return True

    return sio, bridge


async def _fill(lifecycle: AsyncBroadcastLifecycle) -> EntityId:
    bookings = lifecycle.kind("booking")
    booking = await bookings.create("c-1", slots=2)
    await bookings.start_broadcast(booking.id, ["t-1", "t-2"])
    await bookings.activate(booking.id, ttl=timedelta(minutes=5))
    await bookings.accept(booking.id, "t-1", actor="t-1")
    await bookings.accept(booking.id, "t-2", actor="t-2")
    return booking.id


def test_each_recipient_hears_exactly_its_events_in_version_order(async_database_url: str) -> None:
    """An async lifecycle on the AsyncServer's loop: each client hears its own copies, in version order, no other."""
    sio, bridge = async_server()
    recorder = EventRecorder()
    lifecycles: list[AsyncBroadcastLifecycle] = []

    async def setup() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_database_url)
        await store.create_all()
        lifecycle = AsyncBroadcastLifecycle(store)
        lifecycle.bus.connect(recorder)
        bridge.connect(lifecycle)
        lifecycles.append(lifecycle)

    async def drive() -> None:
        await _fill(lifecycles[0])
        await sio.emit(FLUSH)

    with AsgiNode(socketio.ASGIApp(sio), setup) as node:
        heard = hear(node, USERS, drive)
        node.call(lifecycles[0].store.close())  # type: ignore[union-attr]

    events = recorder.events
    assert [e.name for e in events][-2:] == ["BROADCAST_STATE_CHANGED", "BOOKING_FULLY_FILLED"]
    for (role, user), got in heard.items():
        assert got == expected(events, role, user), (role, user)
        versions = [data["version"] for _, data in got]
        assert versions == sorted(versions)
    assert [name for name, _ in heard["customer", "c-1"]] == ["BROADCAST_STATE_CHANGED"] * 5 + ["BOOKING_FULLY_FILLED"]
    # offered at start_broadcast, offered again by activate (the deadline), then the fill
    assert [name for name, _ in heard["transporter", "t-1"]] == ["BOOKING_OFFERED"] * 2 + ["BOOKING_FULLY_FILLED"]
    assert heard["customer", "c-2"] == [] and heard["transporter", "t-3"] == []
    assert all("t-2" not in str(data) for _, data in heard["transporter", "t-1"])


def test_sync_server_bridge_reaches_polling_clients(database_url: str) -> None:
    """A sync lifecycle and a sync socketio.Server: each client hears exactly its events, the others nothing; a socket
    taken out of its room by leave_rooms hears nothing more."""
    sio = socketio.Server(async_mode="threading")
    bridge = SocketIOBridge(sio)

    @sio.event  # type: ignore[untyped-decorator]
    def connect(sid: str, environ: dict[str, Any], auth: dict[str, str] | None) -> bool:
        if not auth:
            return False
        bridge.enter_rooms(sid, Recipient(auth["role"], auth["user"]))  # type: ignore[arg-type]
        return True

    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    lifecycle = BroadcastLifecycle(store)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    bridge.connect(lifecycle)
    with WsgiNode(socketio.WSGIApp(sio)) as node:
        listeners = {(role, user): Listener(node.url, {"role": role, "user": user}, ["polling"]).connect()
                     for role, user in USERS}
        bookings = lifecycle.kind("booking")
        booking = bookings.create("c-1", slots=2)
        bookings.start_broadcast(booking.id, ["t-1", "t-2"])
        sio.emit(FLUSH)
        for listener in listeners.values():
            listener.flushed(1)
        before_cancel = recorder.events
        bridge.leave_rooms(listeners["transporter", "t-1"].client.get_sid(), Recipient("transporter", "t-1"))
        bookings.cancel(booking.id, reason="no longer needed", actor="c-1")
        sio.emit(FLUSH)
        heard = {key: listener.flushed(2) for key, listener in listeners.items()}
        for listener in listeners.values():
            listener.disconnect()
    store.close()

    for (role, user), got in heard.items():
        events = before_cancel if user == "t-1" else recorder.events
        assert got == expected(events, role, user), (role, user)
    assert [name for name, _ in heard["transporter", "t-2"]] == ["BOOKING_OFFERED", "BOOKING_CANCELLED"]
    assert heard["transporter", "t-2"][-1][1]["reason"] == "no longer needed"
    assert [name for name, _ in heard["transporter", "t-1"]] == ["BOOKING_OFFERED"]
    assert heard["customer", "c-2"] == [] and heard["transporter", "t-3"] == []


def test_unreachable_server_leaves_the_event_to_the_relay(database_url: str, clock: ManualClock) -> None:
    """An emit whose server loop has stopped fails; the event waits in the outbox, and the relay emits it through the
    bridge of the restarted server, to the bridge alone (a receiver that handled it is not called again)."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    lifecycle = BroadcastLifecycle(store, clock=clock, retry=RetryPolicy(first_delay=timedelta(seconds=1)))
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    bookings = lifecycle.kind("booking")

    def node_with_bridge() -> tuple[AsgiNode, socketio.AsyncServer, list[Any]]:
        sio, bridge = async_server()
        disconnects: list[Any] = []

        async def setup() -> None:  # the coroutine receiver is connected on the server's loop
            disconnects.append(bridge.connect(lifecycle))

        return AsgiNode(socketio.ASGIApp(sio), setup), sio, disconnects

    first, _, disconnects = node_with_bridge()
    with first:
        customer = Listener(first.url, {"role": "customer", "user": "c-1"}).connect()
        booking = bookings.create("c-1", slots=1)
        customer.disconnect()
    first_heard = customer.heard
    result = bookings.start_broadcast(booking.id, ["t-1"])  # the server is gone: the bridge cannot emit
    assert [e.name for e in result.events] == ["BROADCAST_STATE_CHANGED", "BOOKING_OFFERED"]
    pending = store.pending_events(10)
    assert sorted(entry.event.name for entry in pending) == ["BOOKING_OFFERED", "BROADCAST_STATE_CHANGED"]
    assert all("ReceiverUnreachable" in (entry.last_error or "") for entry in pending)
    assert len(recorder.events) == 3  # the recorder handled both events: the relay will not call it again
    disconnects[0]()

    second, sio, _ = node_with_bridge()
    with second:
        customer = Listener(second.url, {"role": "customer", "user": "c-1"}).connect()
        transporter = Listener(second.url, {"role": "transporter", "user": "t-1"}).connect()
        clock.advance(timedelta(minutes=1))  # past the grace and the backoff
        report = lifecycle.relay().relay_once()
        second.call(sio.emit(FLUSH))
        assert report.delivered == 2 and report.failed == 0
        assert customer.flushed() == [("BROADCAST_STATE_CHANGED", dict(result.events[0].payload()))]
        assert transporter.flushed() == [("BOOKING_OFFERED", dict(result.events[1].payload()))]
        customer.disconnect()
        transporter.disconnect()
    assert len(recorder.events) == 3
    assert store.pending_events(10) == []
    assert first_heard == [("BROADCAST_STATE_CHANGED", dict(recorder.events[0].payload()))]
    store.close()


def test_bridge_refuses_what_it_cannot_use() -> None:
    """A server of the wrong flavour, a bad namespace, room hook or name, and a non-bus target are clear errors."""
    with pytest.raises(InvalidArgument, match=r"server must be a socketio\.AsyncServer"):
        AsyncSocketIOBridge(socketio.Server())
    with pytest.raises(InvalidArgument, match=r"server must be a socketio\.Server"):
        SocketIOBridge(socketio.AsyncServer())
    with pytest.raises(InvalidArgument, match="namespace must be"):
        SocketIOBridge(socketio.Server(), namespace="chat")
    with pytest.raises(InvalidArgument, match="room must be"):
        SocketIOBridge(socketio.Server(), room="user")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="name must be"):
        SocketIOBridge(socketio.Server(), name=" ")
    with pytest.raises(InvalidArgument, match="lifecycle must be"):
        SocketIOBridge(socketio.Server()).connect(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="recipients must be"):
        SocketIOBridge(socketio.Server()).enter_rooms("sid", "c-1")  # type: ignore[arg-type]


def test_room_hook_and_name_are_used() -> None:
    """A custom room hook names the rooms emitted to; the bridge connects under its durable name (once per bus)."""
    emitted: list[tuple[str, list[str], str]] = []

    class Recording:  # stands in for a write-only client manager: the same emit signature
        def emit(self, event: str, data: Any, *, to: list[str], namespace: str) -> None:
            emitted.append((event, to, namespace))

    bridge = SocketIOBridge(Recording(), room=lambda r: f"user:{r.id}", namespace="/live")
    bus = SignalBus()
    lifecycle = BroadcastLifecycle(InMemoryStore(), bus=bus)
    bridge.connect(bus)
    with pytest.raises(InvalidArgument, match="already connected"):
        SocketIOBridge(Recording()).connect(lifecycle)
    bookings = lifecycle.kind("booking")
    booking = bookings.create("c-1")
    bookings.start_broadcast(booking.id, ["t-1"])
    bookings.cancel(booking.id, actor="c-1")
    assert emitted == [("BROADCAST_STATE_CHANGED", ["user:c-1"], "/live"),
                       ("BROADCAST_STATE_CHANGED", ["user:c-1"], "/live"), ("BOOKING_OFFERED", ["user:t-1"], "/live"),
                       ("BROADCAST_STATE_CHANGED", ["user:c-1"], "/live"),
                       ("BOOKING_CANCELLED", ["user:c-1", "user:t-1"], "/live")]  # one emit, every recipient's room
    assert bus.names() == ("broadcast_lifecycle.socketio",)
    assert recipient_room(Recipient("transporter", "t-1")) == "transporter:t-1"


def test_a_bridge_connected_for_one_kind_emits_only_its_events() -> None:
    """connect(kind=...) limits the bridge to that kind's events, under the name given."""
    emitted: list[tuple[str, list[str]]] = []

    class Recording:
        def emit(self, event: str, data: Any, *, to: list[str], namespace: str) -> None:
            emitted.append((event, to))

    lifecycle = BroadcastLifecycle(InMemoryStore())
    SocketIOBridge(Recording(), name="orders-to-sockets").connect(lifecycle, kind="order")
    lifecycle.kind("booking").create("c-1")
    lifecycle.kind("order").create("c-2")
    assert emitted == [("BROADCAST_STATE_CHANGED", ["customer:c-2"])]
    assert lifecycle.bus.names() == ("orders-to-sockets",)


def test_a_redis_publish_that_fails_is_recorded_delivered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As docs/socketio.md says: python-socketio's RedisManager logs a publish it could not make and returns, so the
    bridge's emit does not raise and the outbox records the event delivered."""
    manager = socketio.RedisManager(f"unix://{tmp_path / 'no-redis.sock'}", write_only=True)
    store = InMemoryStore()
    lifecycle = BroadcastLifecycle(store)
    SocketIOBridge(manager).connect(lifecycle)
    with caplog.at_level(logging.ERROR):
        lifecycle.kind("booking").create("c-1")
    assert store.pending_events(10) == []
    assert "Cannot publish to redis... giving up" in caplog.text
