import asyncio
import tempfile
from datetime import timedelta

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    TransitionRefused,
    lifecycle_tasks,
)


async def main(database: str) -> None:
    store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{database}")  # or postgresql+psycopg://...
    await store.create_all()
    lifecycle = AsyncBroadcastLifecycle(store)
    bookings = lifecycle.kind("booking")

    async def emit(event: BroadcastEvent) -> None:  # e.g. await sio.emit(event.name, ..., room=...)
        to = ", ".join(f"{r.role}:{r.id}" for r in event.recipients)
        print(f"{event.name} to [{to}] v{event.version}")

    lifecycle.bus.connect(emit)  # a coroutine receiver: awaited on this loop after each commit

    async with lifecycle_tasks(lifecycle):  # the sweeper and the relay run while the app does
        booking = await bookings.create("c-1", slots=2)
        await bookings.start_broadcast(booking.id, ["t-1", "t-2", "t-3"], actor="dispatcher")
        await bookings.activate(booking.id, ttl=timedelta(minutes=5), actor="dispatcher")
        results = await asyncio.gather(  # three transporters race for two slots
            *(bookings.accept(booking.id, t) for t in ("t-1", "t-2", "t-3")), return_exceptions=True)
        for result in results:
            print("refused:" if isinstance(result, TransitionRefused) else "accepted:",
                  getattr(result, "reason", None) or getattr(result, "status", None))
        print((await bookings.get(booking.id)).status)  # fully_filled
    await store.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(f"{tmp}/broadcasts.db"))
