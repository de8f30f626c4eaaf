"""The example app's latency: accept -> the customer's event, with 200 connected python-socketio
clients, on one node and on two nodes behind python-socketio's Redis manager, beside a bare
python-socketio emit measured the same way in the same run.

The bare reference (``bare_socketio.py``) is an ``AsyncServer`` under the same uvicorn and Starlette
that emits a payload of the same size to a room when told to over HTTP. Latency runs from just
before the HTTP request is sent to the event's arrival at the customer's client (clients and
requests on one loop, all on 127.0.0.1); server CPU is the server processes' CPU time over the timed
requests, per request (``/proc``, 10 ms ticks). With two nodes, requests go to the first node and
customers listen on the second, so every timed event crosses Redis. Every client's events are
checked: exactly its own, each once (``app_scenario.check_events``; the bare emits by event id).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from app_harness import Listeners, Server, Stats, stats, timed

from broadcast_lifecycle import BroadcastLifecycle

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
sys.path[:0] = [str(HERE.parent / "tests"), str(EXAMPLES)]

from app_scenario import Scenario, check_events, seed_rows, socket_auth  # noqa: E402 (needs examples/ on the path)
from marketplace.db import migrate, seed_transporters  # noqa: E402
from postgres_server import DURABLE_SETTINGS, PostgresServer, find_binaries  # noqa: E402
from redis_server import RedisServer, find_binary  # noqa: E402

CUSTOMERS = 100
TRANSPORTERS = 100
"""200 connected clients in all."""
MEASURED = 200
"""Accepts (and bare emits) timed in each set-up: 100 bookings of two trucks."""
WARMUP = 20
STATE_CHANGED = "BROADCAST_STATE_CHANGED"
SECRET = "bench-app-secret"
TARGETS = "targets on one node: median <= 5 ms, p99 <= 25 ms, library's share of the median <= 1 ms"

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
def nodes(target: str, count: int, env: dict[str, str], *, app_dir: Path = HERE,
          factory: bool = False) -> Iterator[list[Server]]:
    """``count`` uvicorn servers of ``target``, stopped on leaving (their logs printed on a failure)."""
    with ExitStack() as stack:
        servers = [stack.enter_context(Server(target, app_dir=app_dir, env=env, factory=factory))
                   for _ in range(count)]
        try:
            yield servers
        except BaseException:
            for server in servers:
                print(f"--- {server.target} on {server.url} logged:\n{server.log_tail()}", file=sys.stderr)
            raise


async def connect_split(servers: list[Server], auth: Callable[[str], dict[str, Any]]) -> Listeners:
    """The 200 clients: customers on the last server, transporters on the first (with two nodes,
    every customer event crosses from the node that handled the request to the other one)."""
    listeners = Listeners(customers + transporters)
    split = {servers[-1].url: customers, servers[0].url: transporters}
    for url in dict.fromkeys(server.url for server in servers):
        users = customers + transporters if len(servers) == 1 else split[url]
        part = Listeners(users, listeners.waiters, changed=listeners.changed)
        await part.connect(url, auth)
        listeners.by_user.update(part.by_user)
    return listeners


def cpu(servers: list[Server]) -> float:
    """CPU seconds used so far by the server processes together."""
    return sum(server.cpu_seconds() for server in servers)


class Bare:
    """The bare reference: emits to customers' rooms, each requested from the first server."""

    def __init__(self, http: aiohttp.ClientSession, listeners: Listeners) -> None:
        self.http = http
        self.listeners = listeners
        self.template = accept_payload()
        self.sent: dict[str, Counter[str]] = {}
        self.count = 0

    async def _emit(self, room: str, payload: dict[str, Any]) -> None:
        async with self.http.post("/emit", json={"room": room, "event": STATE_CHANGED, "payload": payload}) as r:
            r.raise_for_status()
            await r.read()

    async def emit_timed(self, times: int) -> list[float]:
        """Seconds from each of ``times`` requests to its customer hearing the payload."""
        latencies = []
        for _ in range(times):
            n, self.count = self.count, self.count + 1
            room = customers[n % CUSTOMERS]
            event_id = f"bare-{n:031d}"  # as long as a UUID, so the payload's size is the app's
            payload = {**self.template, "bookingId": 100_000 + n, "entityId": 100_000 + n, "eventId": event_id}
            self.sent.setdefault(room, Counter())[payload["eventId"]] += 1
            arrival = self.listeners.expect(room, STATE_CHANGED, payload["bookingId"], payload["status"])
            latencies.append(await timed(partial(self._emit, room, payload), arrival))
        return latencies

    def check(self) -> None:
        """Raise unless each client heard exactly the event ids sent to its room, each once."""
        for user, events in self.listeners.heard().items():
            got = Counter(str(h.payload.get("eventId")) for h in events)
            if got != self.sent.get(user, Counter()):
                missing, extra = self.sent.get(user, Counter()) - got, got - self.sent.get(user, Counter())
                raise AssertionError(f"{user} heard the wrong events: missing {dict(missing)}, extra {dict(extra)}")


async def compare(app_servers: list[Server], bare_servers: list[Server]) -> tuple[Stats, Stats]:
    """Time ``MEASURED`` accepts on the app and as many bare emits, interleaved (two emits, then a
    booking's two accepts) so both see the same moments of a shared machine; after ``WARMUP`` of each."""
    secret = SECRET.encode()
    app_clients = await connect_split(app_servers, partial(socket_auth, secret))
    bare_clients = await connect_split(bare_servers, lambda user: {"user": user})
    try:
        async with aiohttp.ClientSession(base_url=app_servers[0].url) as app_http, \
                aiohttp.ClientSession(base_url=bare_servers[0].url) as bare_http:
            scenario = Scenario(app_http, app_clients, secret, customers, transporters)
            reference = Bare(bare_http, bare_clients)
            await scenario.accept_all(await scenario.book(WARMUP // 2))
            await reference.emit_timed(WARMUP)
            batch = await scenario.book(MEASURED // 2)
            app_latencies: list[float] = []
            bare_latencies: list[float] = []
            app_cpu, bare_cpu = -cpu(app_servers), -cpu(bare_servers)
            for booking in batch:
                bare_latencies += await reference.emit_timed(2)
                app_latencies += await scenario.accept_all([booking])
            app_cpu, bare_cpu = app_cpu + cpu(app_servers), bare_cpu + cpu(bare_servers)
            histories = await scenario.histories()
            await app_clients.settle(lambda: all(  # every fill announced to all three (emitted before the answer)
                any(h.event == "BOOKING_FULLY_FILLED" and h.payload["bookingId"] == b.id
                    for h in app_clients.by_user[user].heard) for b in scenario.booked
                for user in (b.customer, *b.offered)))
            check_events(scenario.booked, app_clients.heard(), histories)
            reference.check()
    finally:
        await app_clients.disconnect()
        await bare_clients.disconnect()
    return stats(app_latencies, app_cpu), stats(bare_latencies, bare_cpu)


def app_nodes(count: int, database_url: str, redis_url: str | None = None) -> Any:
    """``count`` app processes on ``database_url`` (migrated and seeded here first)."""
    migrate(database_url)
    seed_transporters(database_url, seed_rows(transporters))
    env = {"DATABASE_URL": database_url, "MARKETPLACE_SECRET": SECRET, "MARKETPLACE_MIGRATE": "0",
           **({"REDIS_URL": redis_url} if redis_url else {})}
    return nodes("marketplace.app:from_env", count, env, app_dir=EXAMPLES, factory=True)


def report(label: str, app_stats: Stats, bare_stats: Stats, *, targets: bool = False) -> None:
    """The app's row, the bare row measured at the same moments, the library's share (and the
    one-node targets, met or missed)."""
    share = app_stats.median_ms - bare_stats.median_ms
    print(app_stats.row(f"app, {label}"))
    print(bare_stats.row("  bare python-socketio emit, interleaved"))
    print(f"   {'':<44} library's share: median {share:+.2f} ms, CPU {app_stats.cpu_us - bare_stats.cpu_us:+.0f} us "
          "per accept")
    if targets:
        verdict = {"median <= 5 ms": app_stats.median_ms <= 5, "p99 <= 25 ms": app_stats.p99_ms <= 25,
                   "share <= 1 ms": share <= 1}
        print(f"   {'':<44} " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in verdict.items()))


def main() -> None:
    """Run the set-ups and print their figures."""
    print(f"   {CUSTOMERS + TRANSPORTERS} clients ({CUSTOMERS} customers, {TRANSPORTERS} transporters), "
          f"{MEASURED} timed requests after {WARMUP} warm-up; customer payload {len(json.dumps(accept_payload()))} B; "
          f"{TARGETS}")
    with tempfile.TemporaryDirectory() as tmp, nodes("bare_socketio:app", 1, {}) as bare_servers:
        with app_nodes(1, f"sqlite:///{tmp}/bench.db") as servers:
            report("one node, SQLite file", *asyncio.run(compare(servers, bare_servers)), targets=True)
        if find_binaries() is None:
            print("   PostgreSQL: skipped (no server binaries; see tests/postgres_server.py)")
            return
        with PostgresServer(settings=DURABLE_SETTINGS) as pg, app_nodes(1, pg.create_database("one")) as servers:
            report("one node, PostgreSQL", *asyncio.run(compare(servers, bare_servers)), targets=True)
    if find_binaries() is None or find_binary() is None:
        print("   two nodes: skipped (needs redis-server: apt-get install redis-server)")
        return
    with PostgresServer(settings=DURABLE_SETTINGS) as pg, RedisServer() as redis, \
            nodes("bare_socketio:app", 2, {"BENCH_REDIS_URL": redis.url}) as bare_servers, \
            app_nodes(2, pg.create_database("two"), redis.url) as servers:
        report("two nodes + Redis, PostgreSQL", *asyncio.run(compare(servers, bare_servers)))


if __name__ == "__main__":
    main()
