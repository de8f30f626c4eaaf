"""The bridge's emits when rooms overlap or the room hook fails: one message per socket per event, and a failed
event emits nothing (so the relay's retry repeats nothing a client already heard)."""

from __future__ import annotations

from typing import Any

import socketio
from socket_nodes import FLUSH, Heard, Listener, WsgiNode

from broadcast_lifecycle import (
    BroadcastLifecycle,
    InMemoryStore,
    KindConfig,
    Recipient,
    SocketIOBridge,
)
from broadcast_lifecycle.events import Topic, build_event

FLEET = {"t-1": "acme", "t-2": "acme", "t-3": "zeta"}
"""Transporter -> fleet: a dispatcher's socket sits in its fleet's room."""


def fleet_room(recipient: Recipient) -> str:
    """Customers in their own room, transporters in their fleet's."""
    return f"fleet:{FLEET[recipient.id]}" if recipient.role == "transporter" else f"customer:{recipient.id}"


def test_a_socket_in_a_room_shared_by_several_recipients_hears_each_event_once() -> None:
    """Two recipients whose rooms coincide (a fleet room), and one socket in two recipients' rooms (a user in both
    roles): each socket hears each event once, not once per recipient."""
    sio = socketio.Server(async_mode="threading")
    bridge = SocketIOBridge(sio, room=fleet_room)

    @sio.event  # type: ignore[untyped-decorator]
    def connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> bool:
        bridge.enter_rooms(sid, *(Recipient(role, user) for role, user in auth.items()))  # type: ignore[arg-type]
        return True

    lifecycle = BroadcastLifecycle(InMemoryStore())
    bridge.connect(lifecycle)
    with WsgiNode(socketio.WSGIApp(sio)) as node:
        dispatcher = Listener(node.url, {"transporter": "t-1"}, ["polling"]).connect()
        both = Listener(node.url, {"customer": "c-1", "transporter": "t-3"}, ["polling"]).connect()
        bookings = lifecycle.kind("booking")
        booking = bookings.create("c-1").id
        bookings.start_broadcast(booking, ["t-1", "t-2", "t-3"])
        bookings.cancel(booking, actor="c-1")
        sio.emit(FLUSH)
        heard: dict[str, list[Heard]] = {"dispatcher": dispatcher.flushed(), "both": both.flushed()}
        dispatcher.disconnect()
        both.disconnect()
    names = {who: [name for name, _ in got] for who, got in heard.items()}
    assert names["dispatcher"] == ["BOOKING_OFFERED", "BOOKING_CANCELLED"]
    assert names["both"] == ["BROADCAST_STATE_CHANGED", "BROADCAST_STATE_CHANGED", "BOOKING_OFFERED",
                             "BROADCAST_STATE_CHANGED", "BOOKING_CANCELLED"]


class Recording:
    """Stands in for a write-only client manager: the same emit signature."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any]] = []

    def emit(self, event: str, data: Any, *, to: Any, namespace: str) -> None:
        self.emitted.append((event, to))


def test_a_room_hook_that_raises_emits_nothing_of_the_event() -> None:
    """When the room hook fails for one recipient, no recipient of that event has been emitted to: the event waits
    for the relay, whose retry then reaches each client once."""
    known = {"c-1", "t-1"}

    def room(recipient: Recipient) -> str:
        if recipient.id not in known:
            raise LookupError(f"no room for {recipient.id}")
        return f"user:{recipient.id}"

    server = Recording()
    store = InMemoryStore()
    lifecycle = BroadcastLifecycle(store)
    SocketIOBridge(server, room=room).connect(lifecycle)
    bookings = lifecycle.kind("booking")
    booking = bookings.create("c-1").id
    bookings.start_broadcast(booking, ["t-1", "t-2"])
    server.emitted.clear()
    bookings.cancel(booking, actor="c-1")  # BOOKING_CANCELLED goes to c-1, t-1, t-2: t-2 has no room yet
    assert [name for name, _ in server.emitted] == ["BROADCAST_STATE_CHANGED"]
    (pending,) = [entry for entry in store.pending_events(10) if entry.event.name == "BOOKING_CANCELLED"]
    assert "no room for t-2" in (pending.last_error or "")


def test_an_event_without_recipients_is_emitted_to_nobody() -> None:
    """An event addressed to no one emits nothing (python-socketio would take a missing room as everyone)."""
    server = Recording()
    bridge = SocketIOBridge(server)
    snapshot = BroadcastLifecycle(InMemoryStore()).kind("booking").create("c-1").snapshot
    event = build_event(KindConfig("booking"), snapshot, Topic.OFFERED, (), previous_status=None, trigger="test")
    bridge(event)
    assert server.emitted == []


