"""Async commands joined to the host's AsyncSession: they commit with it, events leave after that commit,
and nothing is written or sent when it rolls back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastMixin,
    BroadcastNotFound,
    InvalidArgument,
    WritePath,
)
from broadcast_lifecycle.testing import EventRecorder


class Base(DeclarativeBase):
    """The host's declarative base."""


class Booking(Base, BroadcastMixin):
    """A host model with columns of its own."""

    __tablename__ = "async_host_bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    pickup: Mapped[str | None] = mapped_column(String(100))


class AuditNote(Base):
    """A row of the host's own, written in the same transaction as a command."""

    __tablename__ = "async_host_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


async def _host(url: str) -> tuple[AsyncSQLAlchemyStore, AsyncBroadcastLifecycle, EventRecorder,
                                   async_sessionmaker[AsyncSession]]:
    store = AsyncSQLAlchemyStore.from_url(url, models={"booking": Booking})
    async with store.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await store.create_all()
    lifecycle = AsyncBroadcastLifecycle(store)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    return store, lifecycle, recorder, async_sessionmaker(store.engine, expire_on_commit=False)


def test_joined_command_commits_with_the_host_and_announces_after(async_database_url: str) -> None:
    """adopt, start_broadcast and the host's own row commit together; the events arrive only after the commit."""

    async def scenario() -> None:
        store, lifecycle, recorder, sessions = await _host(async_database_url)
        bookings = lifecycle.kind("booking")
        async with sessions() as session:
            session.add(Booking(id=1, customer_id="c1", slots_requested=2, pickup="Dock 1"))
            adopted = await bookings.adopt(1, tx=session)
            started = await bookings.start_broadcast(1, ["t1", "t2"], tx=session)
            session.add(AuditNote(text="broadcast started"))
            assert (adopted.path, started.version) == (WritePath.ADOPT, 2)
            assert recorder.events == []  # nothing leaves before the commit
            await session.commit()
        assert [(e.name, e.version) for e in recorder.events] == [
            ("BROADCAST_STATE_CHANGED", 1), ("BROADCAST_STATE_CHANGED", 2), ("BOOKING_OFFERED", 2)]
        assert (await bookings.get(1)).version == 2
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(AuditNote)) == 1
        await store.close()

    asyncio.run(scenario())


def test_rolled_back_session_writes_and_sends_nothing(async_database_url: str) -> None:
    """A command joined to an AsyncSession that rolls back leaves no trace and sends no event."""

    async def scenario() -> None:
        store, lifecycle, recorder, sessions = await _host(async_database_url)
        bookings = lifecycle.kind("booking")
        created = await bookings.create("c1", slots=2)
        await bookings.start_broadcast(created.id, ["t1"])
        await bookings.activate(created.id, ttl=timedelta(minutes=5))
        recorder.clear()
        async with sessions() as session:
            await bookings.cancel(created.id, tx=session)
            session.add(AuditNote(text="cancelled"))
            await session.rollback()
        assert recorder.events == []
        assert (await bookings.get(created.id)).version == 3
        assert [h.trigger for h in await bookings.history(created.id)][-1] == "activate"
        assert await store.run_sync(lambda s: s.pending_events(10)) == []
        await store.close()

    asyncio.run(scenario())


def test_reads_in_the_session_see_its_uncommitted_writes(async_database_url: str) -> None:
    """get() joined to the session sees a row the session holds but has not committed; outside it, not found."""

    async def scenario() -> None:
        store, lifecycle, _, sessions = await _host(async_database_url)
        bookings = lifecycle.kind("booking")
        async with sessions() as session:
            session.add(Booking(id=5, customer_id="c5", slots_requested=1, pickup="Dock 5"))
            await bookings.adopt(5, tx=session)
            assert (await bookings.get(5, tx=session)).customer_id == "c5"
            with pytest.raises(BroadcastNotFound):
                await bookings.get(5)
            await session.rollback()
        await store.close()

    asyncio.run(scenario())


def test_tx_must_be_an_async_session(tmp_path: object) -> None:
    """A sync Session (or anything else) as tx is refused, naming the argument."""

    async def scenario() -> None:
        bookings = AsyncBroadcastLifecycle().kind("booking")
        with pytest.raises(InvalidArgument, match=r"tx must be a sqlalchemy\.ext\.asyncio\.AsyncSession, got Session"):
            await bookings.create("c1", tx=Session())  # type: ignore[arg-type]

    asyncio.run(scenario())
