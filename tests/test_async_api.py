"""The async facade's surface: the same commands with the same keywords as the sync one, checked at once."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from sqlalchemy import create_engine

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    AsyncSQLAlchemyStore,
    InvalidArgument,
    KindHandle,
    SQLAlchemyStore,
)

_PUBLIC = sorted(name for name, _ in inspect.getmembers(KindHandle, inspect.isfunction) if not name.startswith("_"))


@pytest.mark.parametrize("name", _PUBLIC)
def test_async_handle_mirrors_the_sync_handle(name: str) -> None:
    """Each KindHandle method exists on AsyncKindHandle with the same parameters, names, kinds and defaults
    (only ``tx`` differs in type), awaited when it touches the store."""
    sync, asynchronous = getattr(KindHandle, name), getattr(AsyncKindHandle, name)
    strip = [(p.name, p.kind, p.default) for p in inspect.signature(sync).parameters.values()]
    assert [(p.name, p.kind, p.default) for p in inspect.signature(asynchronous).parameters.values()] == strip
    assert inspect.iscoroutinefunction(asynchronous) == (name != "add_guard")


def test_unknown_kind_is_refused_at_once() -> None:
    """kind() with an unknown name raises InvalidArgument naming the known kinds, before any await."""
    with pytest.raises(InvalidArgument, match="unknown kind 'parcel'; known kinds: booking, order"):
        AsyncBroadcastLifecycle().kind("parcel")


def test_a_sync_engine_store_is_refused(tmp_path: object) -> None:
    """A SQLAlchemyStore on a sync engine would block the loop: the async facade refuses it, and
    AsyncSQLAlchemyStore refuses a sync engine and a driver its statements are not written for
    (asyncpg), each naming what to use."""
    store = SQLAlchemyStore(create_engine("sqlite://"))
    with pytest.raises(InvalidArgument, match="would block the event loop; use AsyncSQLAlchemyStore"):
        AsyncBroadcastLifecycle(store)
    with pytest.raises(InvalidArgument, match="engine must be a sqlalchemy AsyncEngine"):
        AsyncSQLAlchemyStore(store.engine)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="url must name an asyncio driver"):
        AsyncSQLAlchemyStore.from_url("sqlite:///x.db")
    with pytest.raises(InvalidArgument, match=r"asyncio drivers the store is built for \(postgresql\+psycopg, "
                       r"sqlite\+aiosqlite\), got postgresql\+asyncpg"):
        AsyncSQLAlchemyStore.from_url("postgresql+asyncpg://nobody@localhost/none")


def test_bad_arguments_get_the_sync_errors() -> None:
    """A bad argument raises the same InvalidArgument as on the sync facade, naming the argument."""

    async def scenario() -> None:
        bookings = AsyncBroadcastLifecycle().kind("booking")
        with pytest.raises(InvalidArgument, match="slots"):
            await bookings.create("c1", slots=0)
        created = await bookings.create("c1")
        with pytest.raises(InvalidArgument, match="transporter"):
            await bookings.start_broadcast(created.id, [])

    asyncio.run(scenario())
