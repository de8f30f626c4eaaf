"""The hot path's statements, rendered once per table for the driver, with SQLAlchemy's own type
processors for values (the statements' text is in :mod:`.sql`).

Commands run these strings on the DBAPI cursor: no statement compilation or result machinery per
call, yet values are written exactly as SQLAlchemy would write them, so the host's ORM reads them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Column, Dialect, Integer, SmallInteger, Table
from sqlalchemy.dialects import sqlite

from ..validation import MAX_INT_ID, is_entity_id
from .sql import common, postgresql
from .sql.common import render

__all__ = [
    "ColumnCapacity",
    "EntitySql",
    "LibrarySql",
    "TimeCodec",
    "dumps",
    "render",
]

def _processor(column: Column[Any], dialect: Dialect, bind: bool) -> Callable[[Any], Any] | None:
    impl = column.type.dialect_impl(dialect)
    proc = impl.bind_processor(dialect) if bind else impl.result_processor(dialect, None)
    return proc


class TimeCodec:
    """Aware UTC datetimes to and from the driver's representation.

    On SQLite with SQLAlchemy's default ``DATETIME`` storage format (naive UTC text,
    ``YYYY-MM-DD HH:MM:SS.ffffff``) it formats and parses with ``datetime``'s own ISO methods,
    which write and read exactly that text several times faster than the generic processors.
    """

    def __init__(self, column: Column[Any], dialect: Dialect) -> None:
        self._bind = _processor(column, dialect, bind=True)
        self._result = _processor(column, dialect, bind=False)
        impl = column.type.dialect_impl(dialect)
        self._iso_text = (isinstance(impl, sqlite.DATETIME) and not getattr(impl, "_reg", None)
                          and impl._storage_format == sqlite.DATETIME._storage_format)
        self._last: tuple[datetime | None, Any, datetime | None, Any] = (None, None, None, None)
        """The last two values bound and their results: a command binds its time and its deadline for the
        row, the history and each event, alternately, and the next command the same deadline again, read
        back as an equal datetime (one tuple, replaced whole, so threads never see half). Only UTC values
        are kept and compared: two datetimes in one zone compare by wall time, so 01:30 before and after
        a clock change are equal although an hour apart; in UTC, equal means the same instant."""

    def bind(self, value: datetime | None) -> Any:
        """The value to send for ``value``."""
        if value is None:
            return None
        utc = value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)
        last = self._last
        if last[0] == utc:
            return last[1]
        if last[2] == utc:
            return last[3]
        if self._iso_text:
            bound: Any = _naive_text(utc)
            if type(utc) is datetime and not utc.fold:  # what parsing the text gives back, exactly
                _remember(bound, utc)  # read back (the next command's row), it needs no parsing
        else:
            bound = self._bind(utc) if self._bind else utc
        self._last = (utc, bound, last[0], last[1])
        return bound

    def result(self, value: Any) -> datetime | None:
        """The aware UTC datetime for a stored value."""
        if value is None:
            return None
        if self._iso_text and isinstance(value, str):
            known = _PARSED.get(value)
            if known is not None:
                return known
            try:
                parsed_text = datetime.fromisoformat(value + "+00:00")
            except ValueError:
                pass  # not the default text (written by hand?): the generic parser below says what it is
            else:
                _remember(value, parsed_text)
                return parsed_text
        parsed: datetime = self._result(value) if self._result else value
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)


def _naive_text(utc: datetime) -> str:
    """``utc.isoformat(" ", "microseconds")`` without its "+00:00": SQLAlchemy's DATETIME text on SQLite.
    The text up to the hour is kept (one tuple, replaced whole) and the rest written from two-digit
    strings: half the cost of ``isoformat``, which formats the offset too, on every command's time."""
    hour = _HOUR[0]
    key = (utc.year, utc.month, utc.day, utc.hour)
    if hour[0] != key:
        hour = _HOUR[0] = (key, f"{key[0]:04d}-{_TWO[key[1]]}-{_TWO[key[2]]} {_TWO[key[3]]}:")
    return f"{hour[1]}{_TWO[utc.minute]}:{_TWO[utc.second]}.{utc.microsecond:06d}"


_TWO = tuple(f"{i:02d}" for i in range(100))
_HOUR: list[tuple[tuple[int, int, int, int] | None, str]] = [(None, "")]

_PARSED: dict[str, datetime] = {}
"""DATETIME text to its aware UTC datetime, for the times a command reads back: the last command's time
and the broadcast's creation and deadline, bound or read by this process a moment before. Shared by every
codec on that text (the text says the instant whichever column holds it); emptied when it grows large."""
_PARSED_MAX = 512


def _remember(text: str, value: datetime) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[text] = value


class LibrarySql:
    """Statements on the library's own tables (text from :mod:`.sql.common`)."""

    def __init__(self, dialect: Dialect, history: Table, recipients: Table, outbox: Table, idempotency: Table) -> None:
        self.time = TimeCodec(history.c.at, dialect)
        self.hold = render(common.hold(recipients), dialect)
        self.add_recipient = render(common.add_recipient(recipients), dialect)
        self.list_recipients = render(common.list_recipients(recipients), dialect)
        self.holdings_of = render(postgresql.holdings_of(recipients), dialect) if dialect.name == "postgresql" else ""
        """PostgreSQL: the slots each of a list of transporters holds (see ``DecidesInBatch``)."""
        self.add_history = render(common.add_history(history, dialect), dialect)
        self.add_key = render(common.add_key(idempotency, dialect), dialect)
        self.recall = render(common.recall_key(idempotency, dialect), dialect)
        self.mark_delivered = render(common.mark_delivered(outbox), dialect)
        self.add_events = common.add_events(outbox, dialect)
        """A transition's outbox rows, positional, for ``executemany``: ``OUTBOX_ROW.rows(events, time.bind, at)``."""


class EntitySql:
    """Statements on one broadcasts table (a host model's or the standalone one)."""

    def __init__(self, table: Table, dialect: Dialect, kind_column: bool, recipients: Table) -> None:
        pks = list(table.primary_key.columns)
        if len(pks) != 1:
            raise ValueError(f"table {table.name} must have a single-column primary key, has {len(pks)}")
        self.table = table
        self.pk = pks[0]
        self.bind_id = _processor(self.pk, dialect, bind=True)
        self.keys = ColumnCapacity(self.pk, dialect)
        """What the key column holds: an id it cannot hold is no broadcast's (see ``_lookup_id``)."""
        low, high = max(self.keys.low, -MAX_INT_ID - 1), min(self.keys.high, MAX_INT_ID)
        self._int_range: tuple[int, int] | None = (low, high) if self.keys.python_type is int else None
        """An int key's ids: both :func:`is_entity_id`'s and the column's range."""
        self.customers = ColumnCapacity(table.c.customer_id, dialect)
        self.time = TimeCodec(table.c.state_changed_at, dialect)
        self.load = render(common.load_broadcast(table, dialect, kind_column, recipients), dialect)
        self.load_row = render(common.load_broadcast_row(table, dialect, kind_column), dialect)
        """``load`` without a transporter's holding (NULL in its place), for a command by no transporter."""
        self.update = render(common.update_broadcast(table, dialect, kind_column), dialect)
        self.single_apply: dict[tuple[int, bool], str] = {}
        """PostgreSQL only: the one-statement form of a transition, by its number of events and whether
        the last goes to everyone notified (see pg_single_statement)."""
        self.load_for_update = self.load + (" FOR UPDATE" if dialect.name == "postgresql" else "")

    def holds(self, entity_id: object) -> bool:
        """Whether the key column can hold ``entity_id`` (a valid id, of its type and range)."""
        if type(entity_id) is int and self._int_range is not None:  # the usual id, asked twice a command
            return self._int_range[0] <= entity_id <= self._int_range[1]
        return is_entity_id(entity_id) and self.keys.holds(entity_id)

    def id_param(self, entity_id: Any) -> Any:
        """The primary-key value as the driver wants it."""
        return self.bind_id(entity_id) if self.bind_id else entity_id


class ColumnCapacity:
    """The values a column can hold on this database, for checking arguments before they are sent.

    By the column's Python type: an int within the column's range (PostgreSQL's SMALLINT, INTEGER
    and BIGINT are 16, 32 and 64 bits; every SQLite integer is 64 bits), a string within its declared
    length (on SQLite too, which would store a longer one: the same id is refused on both databases),
    a UUID. A type it does not know holds anything.
    """

    def __init__(self, column: Column[Any], dialect: Dialect) -> None:
        self.column = column
        try:
            self.python_type: type | None = column.type.python_type
        except NotImplementedError:
            self.python_type = None
        bits = 64
        if dialect.name == "postgresql" and isinstance(column.type, Integer):
            bits = 64 if isinstance(column.type, BigInteger) else 16 if isinstance(column.type, SmallInteger) else 32
        self.low, self.high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        length = getattr(column.type, "length", None)
        self.length: int | None = length if isinstance(length, int) else None
        try:
            self._type_name = str(column.type.compile(dialect=dialect))
        except Exception:  # a type this dialect cannot render: its generic name
            self._type_name = str(column.type)

    def holds(self, value: object) -> bool:
        """Whether the column can hold ``value``."""
        expected = self.python_type
        if expected is None or expected not in (int, str, uuid.UUID):
            return True
        if expected is int:
            return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
        if expected is str:
            return isinstance(value, str) and (self.length is None or len(value) <= self.length)
        return isinstance(value, uuid.UUID)

    def allowed(self) -> str:
        """What :meth:`holds` accepts, in words."""
        if self.python_type is int:
            return f"an int from {self.low} to {self.high}"
        if self.python_type is str:
            return "a string" + (f" of at most {self.length} characters" if self.length is not None else "")
        if self.python_type is uuid.UUID:
            return "a UUID"
        return f"a value of type {self.column.type}"

    def where(self) -> str:
        """The column, for messages: ``bookings.id (INTEGER)``."""
        return f"{self.column.table.name}.{self.column.name} ({self._type_name})"


_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Compact JSON for the JSON columns."""
    return _JSON.encode(value)
