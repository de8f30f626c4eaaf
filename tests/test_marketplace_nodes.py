"""Two nodes of the example app (two uvicorn servers, each with its own lifecycle, sweeper, relay and
Socket.IO server) behind python-socketio's Redis manager on a real redis-server, on one PostgreSQL:
a client hears what the other node handled, exactly once."""

from __future__ import annotations

import asyncio
import secrets

from marketplace.clients import Api
from marketplace.fixtures import booking_body, token_for
from marketplace_harness import assert_offered_then, names_and_versions, serve, session
from postgres_server import PostgresServer
from redis_server import RedisServer

SC = "BROADCAST_STATE_CHANGED"
TIMEOUT = 20.0


def test_a_client_on_one_node_hears_commands_handled_on_the_other_once(postgres_server: PostgresServer,
                                                                     redis_server: RedisServer) -> None:
    """The customer on node B hears the creation and cancel handled on node A and the accept handled on
    B, each once, in version order; transporters on both nodes hear the offer and the cancel once."""
    database = postgres_server.create_database("marketplace_nodes")
    secret = secrets.token_bytes(32)
    channel = f"marketplace-{secrets.token_hex(4)}"  # its own: no other test's nodes hear it or are heard
    with serve(database, redis_url=redis_server.url, redis_channel=channel, secret=secret) as node_a, \
            serve(database, redis_url=redis_server.url, redis_channel=channel, secret=secret) as node_b:

        async def scenario() -> None:
            async with session(node_b, ["c-nodes", "t-2"]) as on_b, session(node_a, ["t-1"]) as on_a:
                await asyncio.to_thread(redis_server.wait_for_subscribers, channel, 2, TIMEOUT)
                customer_on_a = Api(on_a.api["t-1"].http, node_a.url, token_for("c-nodes", "customer", secret))
                created = await customer_on_a.post("/api/bookings", booking_body(trucks=2))
                assert created.status == 201
                booking = created.body["id"]
                assert (await on_b.api["t-2"].post(f"/api/bookings/{booking}/accept")).status == 200
                assert (await customer_on_a.post(f"/api/bookings/{booking}/cancel")).status == 200

                everyone = [*on_b.live.values(), *on_a.live.values()]
                for client in everyone:  # Redis keeps one channel's order: the cancel comes last
                    await client.wait_for(lambda got: "BOOKING_CANCELLED" in [r.name for r in got], TIMEOUT)
                assert names_and_versions(on_b.live["c-nodes"].about("booking", booking)) == [
                    (SC, 1), (SC, 2), (SC, 3), (SC, 4), (SC, 5), ("BOOKING_CANCELLED", 5)]
                for client in (on_a.live["t-1"], on_b.live["t-2"]):
                    assert_offered_then(client.about("booking", booking), ("BOOKING_CANCELLED", 5))

        asyncio.run(scenario())
