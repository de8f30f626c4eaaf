"""Broadcast ids on the SQL store: every key the host's model holds fits the library's tables, an
id the key cannot hold is not found (or refused as an argument), automatic ids never clash."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy import Engine, String, Uuid, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastLifecycle,
    BroadcastNotFound,
    BroadcastStatus,
    DuplicateBroadcast,
    InMemoryStore,
    InvalidArgument,
    KindConfig,
)
from broadcast_lifecycle.stores.schema import BroadcastMixin
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder


class Base(DeclarativeBase):
    """The host's declarative base."""


class Booking(Base, BroadcastMixin):
    """Integer keys."""

    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)


class Order(Base, BroadcastMixin):
    """UUID keys."""

    __tablename__ = "orders"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


class Shipment(Base, BroadcastMixin):
    """String keys of up to 255 characters."""

    __tablename__ = "shipments"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)


_KINDS = (KindConfig("booking"), KindConfig("order"), KindConfig("shipment"), KindConfig("parcel"))
"""``parcel`` lives in the standalone table (integer keys)."""


def _setup(url: str) -> tuple[Engine, BroadcastLifecycle, EventRecorder, ManualClock]:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    store = SQLAlchemyStore(engine, models={"booking": Booking, "order": Order, "shipment": Shipment})
    store.create_all(_KINDS)
    clock = ManualClock()
    lc = BroadcastLifecycle(store, clock=clock, kinds=_KINDS)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    return engine, lc, recorder, clock


def test_keys_longer_than_64_characters(database_url: str) -> None:
    """A 200-character key (and transporter id and actor) goes through the whole lifecycle: recipients,
    history, idempotency, outbox, the sweeper."""
    engine, lc, recorder, clock = _setup(database_url)
    key, transporter, actor = "s" * 200, "t" * 200, "a" * 200
    shipments = lc.kind("shipment")
    shipments.create("c1", slots=2, entity_id=key, idempotency_key="create-long")
    shipments.start_broadcast(key, [transporter, "t2"], actor=actor)
    shipments.activate(key, ttl=timedelta(minutes=5))
    assert shipments.accept(key, transporter).snapshot.slots_filled == 1
    shipments.accept(key, "t2", idempotency_key="accept-long")
    assert shipments.release(key, "t2", reason="breakdown").status is BroadcastStatus.PARTIALLY_FILLED
    assert [r.transporter_id for r in shipments.recipients(key)] == ["t2", transporter]  # same time: by id
    history = shipments.history(key)
    assert [h.version for h in history] == [1, 2, 3, 4, 5, 6] and history[1].actor == actor
    clock.advance(timedelta(minutes=6))
    assert lc.expire_due() == 1
    assert shipments.get(key).status is BroadcastStatus.EXPIRED
    assert recorder.events[-1].entity_id == key
    assert {r.id for r in recorder.events[-1].recipients} == {"c1", transporter, "t2"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM bl_outbox WHERE entity_id = :k"), {"k": key}).scalar() == 12
        assert conn.execute(text("SELECT count(*) FROM bl_idempotency WHERE entity_id = :k"), {"k": key}).scalar() == 2


_FOREIGN: list[tuple[str, Any]] = [
    ("booking", "bk-1"), ("booking", uuid.UUID(int=1)), ("booking", 1.0),
    ("order", "order-5"), ("order", 7),
    ("shipment", 7), ("shipment", uuid.UUID(int=1)),
    ("parcel", "bk-1"), ("parcel", uuid.UUID(int=1)),
]


@pytest.mark.parametrize(("kind", "foreign"), _FOREIGN)
def test_an_id_of_another_type_than_the_key(database_url: str, kind: str, foreign: Any) -> None:
    """Looking up an id of another type than the kind's key finds nothing (BroadcastNotFound, on
    every database); creating with one is InvalidArgument naming entity_id and the key's type."""
    _, lc, _, _ = _setup(database_url)
    handle = lc.kind(kind)
    for lookup in (handle.get, handle.history, handle.recipients, handle.cancel):
        with pytest.raises(BroadcastNotFound):
            lookup(foreign)
    with pytest.raises(BroadcastNotFound):
        handle.accept(foreign, "t1")
    with pytest.raises(InvalidArgument, match=r"entity_id must be (an int|a UUID|a string)"):
        handle.create("c1", entity_id=foreign)


@pytest.mark.parametrize("kind", ["booking", "order", "parcel"])
def test_the_text_of_a_key_names_that_broadcast(database_url: str, kind: str) -> None:
    """A str that spells a key of the kind's type ("42", a UUID's text, as a URL path or an event
    payload carries it) finds that broadcast in every command and read; results, history and events
    carry the typed id, and a keyed command replays whether its id came as text or typed."""
    _, lc, recorder, _ = _setup(database_url)
    handle = lc.kind(kind)
    entity_id = handle.create("c1", slots=2).id
    text = str(entity_id)
    assert handle.get(text).id == entity_id and type(handle.get(text).id) is type(entity_id)
    handle.start_broadcast(text, ["t1", "t2"])
    handle.notify_more(text, ["t3"])
    handle.activate(text, ttl=timedelta(minutes=5))
    first = handle.accept(text, "t1", idempotency_key="accept-1")
    assert first.id == entity_id and type(first.id) is type(entity_id)
    replay = handle.accept(entity_id, "t1", idempotency_key="accept-1")
    assert replay.replayed and replay.version == first.version
    assert handle.cancel(text, actor="c1").status is BroadcastStatus.CANCELLED
    assert {type(h.entity_id) for h in handle.history(text)} == {type(entity_id)}
    assert [r.transporter_id for r in handle.recipients(text)] == ["t1", "t2", "t3"]
    assert {(type(e.entity_id), e.entity_id) for e in recorder.events} == {(type(entity_id), entity_id)}


@pytest.mark.parametrize(("kind", "text", "expected"), [
    ("booking", "01", "an int from"), ("booking", "+1", "an int from"), ("booking", " 1", "an int from"),
    ("booking", "bk-1", "an int from"), ("order", "order-5", "a UUID, or its text"),
    ("parcel", "1.0", "an int from"),
])
def test_text_that_spells_no_key_is_not_found_naming_the_key_type(database_url: str, kind: str, text: str,
                                                                   expected: str) -> None:
    """A str that is not exactly the text of a key of the kind's type (a leading zero, a sign, a space,
    not a UUID) is BroadcastNotFound, whose message says what an id of the kind is."""
    _, lc, _, _ = _setup(database_url)
    handle = lc.kind(kind)
    handle.create("c1", entity_id=1 if kind != "order" else uuid.UUID(int=1))
    for call in (handle.get, handle.history, handle.cancel, lambda i: handle.accept(i, "t1")):
        article = "an" if kind == "order" else "a"
        with pytest.raises(BroadcastNotFound, match=f"no {kind} with id '{re.escape(text)}' "
                                                    f"\\({article} {kind} id is {expected}") as caught:
            call(text)
        assert caught.value.entity_id == text and caught.value.expected is not None


def test_the_text_of_a_key_on_the_async_store(async_database_url: str) -> None:
    """On AsyncSQLAlchemyStore too, a UUID key's text finds the broadcast (get, accept, cancel) and
    text that spells none is BroadcastNotFound naming the key type."""

    async def scenario() -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(async_database_url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        store = AsyncSQLAlchemyStore(engine, models={"order": Order})
        await store.create_all(_KINDS)
        orders = AsyncBroadcastLifecycle(store, clock=ManualClock(), kinds=_KINDS).kind("order")
        try:
            entity_id = (await orders.create("c1")).id
            text = str(entity_id)
            assert (await orders.get(text)).id == entity_id
            await orders.start_broadcast(text, ["t1"])
            await orders.activate(text, ttl=timedelta(minutes=5))
            assert (await orders.accept(text, "t1")).id == entity_id
            assert (await orders.cancel(text, actor="c1")).status is BroadcastStatus.CANCELLED
            with pytest.raises(BroadcastNotFound, match=r"\(an order id is a UUID, or its text\)"):
                await orders.get("order-5")
        finally:
            await store.close()
            await engine.dispose()

    asyncio.run(scenario())


def test_create_takes_an_explicit_id_of_the_key_type_only(database_url: str) -> None:
    """create(entity_id=...) with the text of a key is refused (InvalidArgument naming entity_id): a
    new id is given typed; only lookups take a key's text."""
    _, lc, _, _ = _setup(database_url)
    with pytest.raises(InvalidArgument, match="entity_id must be an int"):
        lc.kind("booking").create("c1", entity_id="7")
    with pytest.raises(InvalidArgument, match="entity_id must be a UUID"):
        lc.kind("order").create("c1", entity_id=str(uuid.UUID(int=7)))


def test_the_in_memory_store_keeps_ids_as_given() -> None:
    """The in-memory store has no key type (it holds ids of every type side by side), so it converts
    none: "1" is another broadcast than 1, and a lookup by "1" finds only one created as "1"."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=ManualClock())
    bookings = lc.kind("booking")
    assert bookings.create("c1").id == 1
    with pytest.raises(BroadcastNotFound, match=r"^no booking with id '1'$"):
        bookings.get("1")
    bookings.create("c2", entity_id="1")
    assert bookings.get("1").customer_id == "c2" and bookings.get(1).customer_id == "c1"


def test_ids_beyond_what_the_key_column_holds(database_url: str) -> None:
    """An id the key column cannot hold on this database (PostgreSQL's 32-bit INTEGER) is InvalidArgument
    on create and not found on lookup, SQLite's integers being 64-bit; a string longer than a VARCHAR's
    length is refused on both databases (SQLite would store it: the same id must not work on one only)."""
    engine, lc, _, _ = _setup(database_url)
    bookings, shipments = lc.kind("booking"), lc.kind("shipment")
    big, long = 2**31, "x" * 256
    with pytest.raises(InvalidArgument, match="entity_id must be a string of at most 255 characters"):
        shipments.create("c1", entity_id=long)
    with pytest.raises(InvalidArgument, match="customer_id must be a string of at most 128 characters"):
        bookings.create("c" * 129)
    with pytest.raises(BroadcastNotFound):
        shipments.get(long)
    if engine.dialect.name == "postgresql":
        with pytest.raises(InvalidArgument, match=r"entity_id must be an int from -2147483648 to 2147483647"):
            bookings.create("c1", entity_id=big)
        with pytest.raises(BroadcastNotFound):
            bookings.get(big)
    else:
        assert bookings.create("c1", entity_id=big).id == bookings.get(big).id == big


@pytest.mark.parametrize("kind", ["booking", "parcel"])
def test_automatic_ids_after_explicit_ones(database_url: str, kind: str) -> None:
    """After explicit ids ahead of the key's sequence, automatic ids skip them (PostgreSQL moves the
    sequence past the highest id); a taken explicit id is still DuplicateBroadcast."""
    _, lc, _, _ = _setup(database_url)
    explicit = [lc.kind(kind).create("c1", entity_id=n).id for n in (1, 2, 5)]
    automatic = [lc.kind(kind).create("c2").id for _ in range(3)]
    assert len(set(explicit + automatic)) == 6
    assert all(isinstance(entity_id, int) for entity_id in automatic)
    with pytest.raises(DuplicateBroadcast, match=f"a {kind} with id 5 already exists"):
        lc.kind(kind).create("c3", entity_id=5)


def test_in_memory_automatic_ids_skip_taken_ones() -> None:
    """The in-memory store never hands out an id a host took explicitly."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=ManualClock())
    lc.kind("booking").create("c1", entity_id=2)
    assert [lc.kind("booking").create("c1").id for _ in range(3)] == [1, 3, 4]
