"""The relay in the app's lifespan: a command run by another process with no receivers (a worker, a
script, the CLI) on the app's database reaches the app's Socket.IO clients through the outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

from marketplace.fixtures import booking_body
from marketplace.models import MODELS
from marketplace_harness import NEARBY_VANS, assert_offered_then, distinct, names_and_versions, serve, session

from broadcast_lifecycle import BroadcastLifecycle, SQLAlchemyStore

SC = "BROADCAST_STATE_CHANGED"


def test_a_worker_cancel_reaches_the_clients_through_the_relay(tmp_path: Path) -> None:
    """A sync lifecycle in this thread, with nobody on its bus, cancels a booking the app created: the
    events wait in the outbox, and the app's relay delivers them to the customer and every offered
    transporter. (With no grace, the relay may also take an event of the app's own commands while their
    dispatch is still under way, so this test reads the events as a client does: de-duplicated by id.)"""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    with serve(database, relay_grace=0.0) as app:

        async def scenario() -> None:
            async with session(app, ["c-relay", *NEARBY_VANS]) as s:
                booking = (await s.api["c-relay"].post("/api/bookings", booking_body())).body["id"]
                await s.barrier()
                store = SQLAlchemyStore.from_url(database, models=MODELS)
                try:
                    worker = BroadcastLifecycle(store)
                    await asyncio.to_thread(worker.kind("booking").cancel, booking, actor="ops",
                                            reason="warehouse closed")
                finally:
                    store.close()
                for client in s.live.values():
                    await client.wait_for(lambda got: "BOOKING_CANCELLED" in [r.name for r in got])
                await s.barrier()
                customer = distinct(s.live["c-relay"].about("booking", booking))
                assert names_and_versions(customer)[3:] == [(SC, 4), ("BOOKING_CANCELLED", 4)]
                assert customer[-1].payload["reason"] == "warehouse closed"
                for transporter in NEARBY_VANS:
                    assert_offered_then(distinct(s.live[transporter].about("booking", booking)),
                                        ("BOOKING_CANCELLED", 4))

        asyncio.run(scenario())
