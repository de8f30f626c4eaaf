"""The example app's latency: accept -> the customer's event, with 200 connected python-socketio
clients, on one node and on two nodes behind python-socketio's Redis manager, beside a bare
python-socketio emit measured the same way in the same run.

The bare reference (``bare_socketio.py``) is an ``AsyncServer`` under the same uvicorn and Starlette
that emits a payload of the same size to a room when told to over HTTP. Latency is from just before
the HTTP request is sent to the event's arrival at the customer's client (all on one loop, on
127.0.0.1); server CPU is the server processes' CPU time over the measured requests, per request.
Every client's events are checked against what it should hear: exactly those, each once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from app_harness import Listeners, Server, Stats, free_port, stats, timed

from broadcast_lifecycle import BroadcastLifecycle

HERE = Path(__file__).resolve().parent
CUSTOMERS = 100
TRANSPORTERS = 100
"""200 connected clients in all."""
MEASURED = 200
"""Accepts (and bare emits) timed in each set-up."""
WARMUP = 20
STATE_CHANGED = "BROADCAST_STATE_CHANGED"

customers = [f"customer:c-{n:03d}" for n in range(CUSTOMERS)]
transporters = [f"transporter:t-{n:03d}" for n in range(TRANSPORTERS)]


def accept_payload() -> dict[str, Any]:
    """The customer's payload of an accept that leaves the booking partially filled, from the library."""
    lifecycle = BroadcastLifecycle()
    heard: list[dict[str, Any]] = []
    lifecycle.bus.connect(lambda event: heard.extend(dict(copy.payload) for copy in event.addressed()))
    bookings = lifecycle.kind("booking")
    booking = bookings.create("c-000", slots=2)
    bookings.start_broadcast(booking.id, ["t-000", "t-001"], actor="dispatcher")
    bookings.activate(booking.id, ttl=timedelta(minutes=10), actor="dispatcher")
    bookings.accept(booking.id, "t-000")
    return heard[-1]


@contextmanager
def nodes(target: str, count: int, env: dict[str, str]) -> Iterator[list[Server]]:
    """``count`` uvicorn servers of ``target``, stopped on leaving."""
    with ExitStack() as stack:
        servers = [stack.enter_context(Server(target, app_dir=HERE, env=env)) for _ in range(count)]
        try:
            yield servers
        except BaseException:
            for server in servers:
                print(f"--- {server.target} on {server.url} logged:\n{server.log_tail()}", file=sys.stderr)
            raise


async def connect_split(listeners: Listeners, servers: list[Server], auth: Callable[[str], dict[str, Any]]) -> None:
    """Customers to the last server, transporters to the first: with two nodes, every customer event
    crosses from the node that handled the request to the other one."""
    by_node = {servers[-1].url: customers, servers[0].url: transporters}
    if len(servers) == 1:
        by_node = {servers[0].url: customers + transporters}
    for url, users in by_node.items():
        part = Listeners(users, listeners.waiters, changed=listeners.changed)
        await part.connect(url, auth)
        listeners.by_user.update(part.by_user)


def exactly(heard: dict[str, list[Any]], sent: dict[str, Counter[str]]) -> None:
    """Raise unless each user heard exactly the event ids ``sent`` to them, each once."""
    for user, events in heard.items():
        got = Counter(str(h.payload.get("eventId")) for h in events)
        if got != sent.get(user, Counter()):
            missing = sent.get(user, Counter()) - got
            extra = got - sent.get(user, Counter())
            raise AssertionError(f"{user} heard the wrong events: missing {dict(missing)}, extra {dict(extra)}")


async def bare(servers: list[Server]) -> Stats:
    """Time ``WARMUP + MEASURED`` bare emits to customers' rooms, each sent to the first server."""
    template = accept_payload()
    listeners = Listeners(customers + transporters)
    await connect_split(listeners, servers, lambda user: {"user": user})
    sent: dict[str, Counter[str]] = {}
    latencies: list[float] = []
    cpu = 0.0
    try:
        async with aiohttp.ClientSession(base_url=servers[0].url) as http:

            async def emit(room: str, payload: dict[str, Any]) -> None:
                async with http.post("/emit", json={"room": room, "event": STATE_CHANGED, "payload": payload}) as r:
                    r.raise_for_status()
                    await r.read()

            for n in range(WARMUP + MEASURED):
                room = customers[n % CUSTOMERS]
                payload = {**template, "bookingId": 100_000 + n, "entityId": 100_000 + n, "eventId": f"bare-{n}"}
                sent.setdefault(room, Counter())[payload["eventId"]] += 1
                arrival = listeners.expect(room, STATE_CHANGED, payload["bookingId"], payload["status"])
                if n == WARMUP:
                    cpu = -sum(server.cpu_seconds() for server in servers)
                latency = await timed(lambda: emit(room, payload), arrival)  # noqa: B023 (awaited here)
                if n >= WARMUP:
                    latencies.append(latency)
            cpu += sum(server.cpu_seconds() for server in servers)
        exactly(listeners.heard(), sent)
    finally:
        await listeners.disconnect()
    return stats(latencies, cpu)


def payload_size() -> int:
    """Bytes of the JSON payload both sides emit to the customer."""
    return len(json.dumps(accept_payload()))


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on loopback (no persistence); yields its URL."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    """Run the set-ups and print their figures."""
    print(f"   {CUSTOMERS + TRANSPORTERS} clients ({CUSTOMERS} customers, {TRANSPORTERS} transporters), "
          f"{MEASURED} timed requests after {WARMUP} warm-up; customer payload {payload_size()} B")
    with nodes("bare_socketio:app", 1, {}) as servers:
        one = asyncio.run(bare(servers))
    print(one.row("bare python-socketio emit, one node"))
    if shutil.which("redis-server") is None:
        print("   two nodes: skipped, no redis-server (apt-get install redis-server)")
        return
    with redis_server() as redis_url, nodes("bare_socketio:app", 2, {"BENCH_REDIS_URL": redis_url}) as servers:
        two = asyncio.run(bare(servers))
    print(two.row("bare python-socketio emit, two nodes + Redis"))


if __name__ == "__main__":
    main()
