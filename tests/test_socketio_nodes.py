"""Many nodes: two app processes (uvicorn, an AsyncServer behind python-socketio's AsyncRedisManager, the
bridge) over one PostgreSQL database and a real redis-server. A client hears a command handled on the
other node exactly once; a process with no socket server emits through a write-only RedisManager."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from async_adapter import async_url
from postgres_server import PostgresServer
from redis_server import RedisServer
from socket_nodes import FLUSH, TIMEOUT, Heard, Listener, ProcessNode

from broadcast_lifecycle import BroadcastLifecycle, SocketIOBridge, SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

pytestmark = pytest.mark.postgres

PLACES = {("customer", "c-1"): "b", ("transporter", "t-1"): "a", ("transporter", "t-2"): "b",
          ("customer", "c-2"): "a", ("transporter", "t-3"): "b", ("transporter", "t-9"): "a"}
"""Which node each user's client is connected to; t-9 takes part in nothing."""


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    """A fresh database on the suite's PostgreSQL with the library's tables."""
    url = postgres_server.create_database(f"socketio_nodes_{time.monotonic_ns()}")
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    store.close()
    return url


@pytest.fixture
def channel() -> str:
    """The Redis channel of this test's nodes: its own, so another test's nodes on the session's Redis neither hear
    its emits nor count as its subscribers."""
    return f"socketio-{uuid.uuid4().hex}"


@pytest.fixture
def nodes(database: str, redis_server: RedisServer, channel: str, tmp_path: Path) -> Iterator[dict[str, ProcessNode]]:
    """Nodes ``a`` and ``b``: one app each, on the shared database and Redis."""
    env = {"BL_NODE_DATABASE_URL": async_url(database), "BL_NODE_REDIS_URL": redis_server.url,
           "BL_NODE_CHANNEL": channel}
    started = {name: ProcessNode(name, env, tmp_path) for name in ("a", "b")}
    try:
        for node in started.values():
            node.wait_ready()
        yield started
    finally:
        for node in started.values():
            node.stop()


def copies_for(answers: list[dict[str, Any]], role: str, user: str) -> list[Heard]:
    """What the commands answered as ``user``'s copies of their events, in order."""
    return [(name, payload) for answer in answers for r, u, name, payload in answer["copies"] if (r, u) == (role, user)]


def test_a_client_hears_a_command_handled_on_the_other_node_exactly_once(
        nodes: dict[str, ProcessNode], redis_server: RedisServer, channel: str, database: str) -> None:
    """Commands on node A reach clients on B, and commands on B reach clients on A, each copy exactly once and
    in version order; a third process emitting through a write-only RedisManager reaches clients on both."""
    drivers = {name: Listener(node.url, {"role": "driver"}).connect() for name, node in nodes.items()}
    listeners = {key: Listener(nodes[place].url, {"role": key[0], "user": key[1]}).connect()
                 for key, place in PLACES.items()}
    redis_server.wait_for_subscribers(channel, 2, TIMEOUT)

    def run(node: str, command: str, *args: object, **kwargs: object) -> dict[str, Any]:
        answer: dict[str, Any] = drivers[node].client.call(
            "command", {"command": command, "args": list(args), "kwargs": kwargs}, timeout=int(TIMEOUT))
        assert answer["node"] == node
        return answer

    flushes = 0

    def flush_from(emit: Any) -> None:
        nonlocal flushes
        emit()
        flushes += 1
        for listener in listeners.values():
            listener.flushed(flushes)

    # Phase 1, on node A: a booking of c-1 (connected to B) offered to t-1 (on A) and t-2 (on B).
    answers = [run("a", "create", "c-1", slots=2)]
    booking = answers[0]["id"]
    answers.append(run("a", "start_broadcast", booking, ["t-1", "t-2"]))
    answers.append(run("a", "activate", booking, ttl_seconds=300))
    answers.append(run("a", "accept", booking, "t-1", actor="t-1"))
    flush_from(lambda: drivers["a"].client.call("flush", timeout=int(TIMEOUT)))
    # Phase 2, on node B: the last slot, heard by t-1 on A and c-1 on B.
    answers.append(run("b", "accept", booking, "t-2", actor="t-2"))
    flush_from(lambda: drivers["b"].client.call("flush", timeout=int(TIMEOUT)))
    # Phase 3, in this process (no socket server): a sync lifecycle on the same database, emitting through a
    # write-only RedisManager, as a relay worker would. c-2 is on A, t-3 on B.
    manager = socketio.RedisManager(redis_server.url, channel=channel, write_only=True)
    store = SQLAlchemyStore.from_url(database)
    lifecycle = BroadcastLifecycle(store)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    SocketIOBridge(manager).connect(lifecycle)
    bookings = lifecycle.kind("booking")
    second = bookings.create("c-2").id
    bookings.start_broadcast(second, ["t-3"])
    bookings.cancel(second, actor="c-2", reason="found another truck")
    flush_from(lambda: manager.emit(FLUSH, None))
    assert store.pending_events(10) == []  # every event's delivery (to the bridge) is recorded
    store.close()

    heard = {key: listener.heard for key, listener in listeners.items()}
    for listener in [*listeners.values(), *drivers.values()]:
        listener.disconnect()

    local = [{"copies": [[c.recipient.role, c.recipient.id, e.name, c.payload] for c in e.addressed()]}
             for e in recorder.events]
    for (role, user), got in heard.items():
        want = copies_for(answers, role, user) + copies_for(local, role, user)
        assert got == want, (role, user, PLACES[role, user])
        versions = [(data["entityId"], data["version"]) for _, data in got]
        assert versions == sorted(versions)
    assert [name for name, _ in heard["customer", "c-1"]] == ["BROADCAST_STATE_CHANGED"] * 5 + ["BOOKING_FULLY_FILLED"]
    # offered at start_broadcast, offered again by activate (the deadline), then the fill
    assert [name for name, _ in heard["transporter", "t-1"]] == ["BOOKING_OFFERED"] * 2 + ["BOOKING_FULLY_FILLED"]
    assert [name for name, _ in heard["transporter", "t-3"]] == ["BOOKING_OFFERED", "BOOKING_CANCELLED"]
    assert heard["transporter", "t-9"] == []
