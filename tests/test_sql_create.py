"""create() on a host model fills the model's own column defaults as SQLAlchemy would, on every
write path that creates (SQLite's pre-rendered insert, PostgreSQL's one statement, and Core)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, DateTime, String, TypeDecorator, create_engine, func, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broadcast_lifecycle import BroadcastLifecycle, BroadcastMixin, DuplicateBroadcast, KindConfig
from broadcast_lifecycle.stores._sql_create import _bind_processor
from broadcast_lifecycle.stores.schema import broadcasts_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore


class Base(DeclarativeBase):
    """The host's declarative base."""


def _label(context: Any) -> str:
    """A context-sensitive default: reads the row being inserted."""
    return f"for {context.get_current_parameters()['customer_id']}"


class Parcel(Base, BroadcastMixin):
    """A host model whose key and own columns come from Python-side defaults."""

    __tablename__ = "parcels"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    size: Mapped[str] = mapped_column(String(20), default="small")
    label: Mapped[str] = mapped_column(String(80), default=_label)


class Crate(Base, BroadcastMixin):
    """A host model with a default only SQLAlchemy computes (a SQL expression)."""

    __tablename__ = "crates"
    id: Mapped[int] = mapped_column(primary_key=True)
    packed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=func.now())


class NoneAsText(TypeDecorator[str]):
    """A host type that stores None as the text 'none' (its bind step sees None, as SQLAlchemy sends it)."""

    impl = String(10)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        return "none" if value is None else str(value)


class Box(Base, BroadcastMixin):
    """A host model whose own columns give None a meaning: JSON null, and a type that maps it."""

    __tablename__ = "boxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    tag: Mapped[str | None] = mapped_column(NoneAsText, nullable=True)


KINDS = (KindConfig("parcel"), KindConfig("crate"), KindConfig("box"))


def _lifecycle(url: str) -> BroadcastLifecycle:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    store = SQLAlchemyStore(engine, {"parcel": Parcel, "crate": Crate, "box": Box})
    store.create_all(KINDS)
    return BroadcastLifecycle(store, kinds=KINDS)


def test_python_defaults_of_the_host_model_are_filled(database_url: str) -> None:
    """A UUID key from uuid4, a constant and a function of the row all reach the row, with or without
    a host session."""
    lifecycle = _lifecycle(database_url)
    parcels = lifecycle.kind("parcel")
    created = parcels.create("c1")
    assert isinstance(created.id, uuid.UUID)
    engine = lifecycle.store.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        joined = parcels.create("c2", tx=session)
        session.commit()
    with Session(engine) as session:
        rows = {p.id: (p.size, p.label, p.customer_id) for p in session.scalars(select(Parcel))}
    assert rows == {created.id: ("small", "for c1", "c1"), joined.id: ("small", "for c2", "c2")}
    assert [h.trigger for h in parcels.history(created.id)] == ["create"]
    with pytest.raises(DuplicateBroadcast):
        parcels.create("c3", entity_id=created.id)


def test_a_sql_expression_default_is_filled_by_the_database(database_url: str) -> None:
    """A model whose default is a SQL expression still gets it (SQLAlchemy renders it into the insert)."""
    lifecycle = _lifecycle(database_url)
    crate = lifecycle.kind("crate").create("c1")
    with Session(lifecycle.store.engine) as session:  # type: ignore[attr-defined]
        row = session.get(Crate, crate.id)
        assert row is not None and row.packed_at is not None


def test_a_none_value_goes_through_its_column_type_as_sqlalchemy_sends_it(database_url: str) -> None:
    """None for a host column is bound through the column's type on the pre-rendered insert as in a host
    session (Core): a JSON column stores JSON null, a TypeDecorator's mapping of None applies."""
    lifecycle = _lifecycle(database_url)
    boxes = lifecycle.kind("box")
    rendered = boxes.create("c1", columns={"data": None, "tag": None}).id
    engine = lifecycle.store.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        core = boxes.create("c2", columns={"data": None, "tag": None}, tx=session).id
        session.commit()
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, CASE WHEN data IS NULL THEN 'sql null' ELSE 'json' END || '/' "
                                      "|| tag FROM boxes")).all())
    assert rows == {rendered: "json/none", core: "json/none"}


@given(st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                            timezone(timedelta(hours=-8))])),
    st.dates(), st.none()))
def test_sqlite_insert_writes_times_as_sqlalchemy_writes_them(value: date | None) -> None:
    """The pre-rendered insert's faster DATETIME binding writes exactly SQLAlchemy's text (a datetime's wall
    time, naive or aware; a date; None)."""
    dialect = sqlite.dialect()
    column = broadcasts_table.c.expires_at
    generic = column.type.dialect_impl(dialect).bind_processor(dialect)
    fast = _bind_processor(column, dialect)
    assert generic is not None and fast is not None and fast is not generic
    assert fast(value) == generic(value)
