"""The outbox row, described once: which column holds which event field, and how each value is
written and read back.

Every path that touches ``bl_outbox`` derives from :data:`OUTBOX_ROW`:

- the table's event columns (``schema.outbox_table``);
- the pre-rendered INSERTs: their column list and their ``:ev_*`` parameters (PostgreSQL's one
  statement) or their positional rows (:meth:`OutboxRow.rows`: the general path, the creation), and
  the SELECT list of the statements that compute columns in SQL (PostgreSQL's in-place accept and
  release, both sweeps), which must name a source for each column they compute and refuse to render
  when the description has a column they do not know;
- the Core rows of the create path;
- the rebuild of an event from a stored row (the relay, the sweeps' and the in-place read-backs).

Each column is named after the :class:`~broadcast_lifecycle.events.BroadcastEvent` field it holds.
A new event field is one more :class:`EventColumn` here (and a migration).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any, Literal

from sqlalchemy import JSON, Column, DateTime, Dialect, Integer, String, Text
from sqlalchemy.types import TypeEngine

from ..events import BroadcastEvent, Recipient, Topic
from ..records import EntityId
from ..states import BroadcastStatus

__all__ = ["OUTBOX_ROW", "WRITTEN_AT", "EventColumn", "OutboxRow", "recipients_json"]

Form = Literal["value", "topic", "status", "key", "time", "recipients"]
"""How a field is stored: as it is, an enum's value, the id as text, a time, the recipients as JSON."""


@dataclass(frozen=True)
class EventColumn:
    """One outbox column: the event field of the same name, its SQL type, and its stored form."""

    name: str
    type: TypeEngine[Any]
    nullable: bool = False
    form: Form = "value"
    per_event: bool = False
    """Whether the events of one transition differ in it; the others they share (``build_events`` makes
    them all from the transition's snapshot, trigger and reason), so a statement sends those once."""


_Tz = DateTime(timezone=True)

WRITTEN_AT = "created_at"
"""The column every INSERT fills with the write's time (the relay's grace counts from it)."""


class OutboxRow:
    """Renders and reads the event part of an outbox row from its :class:`EventColumn` list."""

    def __init__(self, columns: tuple[EventColumn, ...]) -> None:
        self.columns = columns
        self.names = tuple(column.name for column in columns)
        self.shared = tuple(column.name for column in columns if not column.per_event)
        """The columns every event of one transition has alike (see :attr:`EventColumn.per_event`)."""
        self._writers: dict[tuple[str, bool], _Writer] = {}
        self._rows: _RowsWriter | None = None

    def table_columns(self) -> list[Column[Any]]:
        """New ``Column`` objects for the table (``event_id`` is the primary key)."""
        return [Column(c.name, c.type, primary_key=c.name == "event_id", nullable=c.nullable) for c in self.columns]

    def insert_columns(self, dialect: Dialect) -> str:
        """The column list of an INSERT: the event's columns, then :data:`WRITTEN_AT`."""
        quote = dialect.identifier_preparer.quote
        return ", ".join(quote(name) for name in (*self.names, WRITTEN_AT))

    def returning(self, dialect: Dialect, table: str = "") -> str:
        """The event's columns, for a RETURNING or SELECT list whose rows :meth:`rebuild` reads
        (qualified with ``table`` when given)."""
        quote = dialect.identifier_preparer.quote
        return ", ".join(f"{table}.{quote(n)}" if table else quote(n) for n in self.names)

    def select_list(self, dialect: Dialect, *, prefix: str | None = "ev_", sql: Mapping[str, str] | None = None,
                    written_at: str = ":at") -> str:
        """The values of one row, in :meth:`insert_columns` order.

        A column named in ``sql`` takes that SQL expression; any other is the parameter
        ``:{prefix}{column}`` (see :meth:`params`). With ``prefix=None`` every column must be in ``sql``.
        """
        sql = sql or {}
        unknown = set(sql) - set(self.names)
        if unknown:
            raise ValueError(f"not outbox event columns: {', '.join(sorted(unknown))}")
        values = []
        for column in self.columns:
            if column.name in sql:
                values.append(sql[column.name])
            elif prefix is None:
                raise ValueError(f"no SQL source for the outbox column {column.name}")
            elif column.form == "recipients" and dialect.name == "postgresql":
                values.append(f"CAST(:{prefix}{column.name} AS JSON)")
            else:
                values.append(f":{prefix}{column.name}")
        return ", ".join((*values, written_at))

    def insert_values(self, dialect: Dialect) -> str:
        """The positional VALUES list of a one-row INSERT in :meth:`insert_columns` order, for the
        driver's placeholder (``?`` on SQLite, ``%s`` on psycopg); :meth:`rows` gives its rows."""
        mark = "?" if dialect.name == "sqlite" else "%s"
        casts = {c.name: f"CAST({mark} AS JSON)" for c in self.columns
                 if c.form == "recipients" and dialect.name == "postgresql"}
        return ", ".join((*(casts.get(name, mark) for name in self.names), mark))

    def rows(self, events: Sequence[BroadcastEvent], bind_time: Callable[[datetime | None], Any],
             written_at: Any) -> list[tuple[Any, ...]]:
        """The rows of ``events`` for the positional INSERT (:meth:`insert_values`), ``written_at``
        last (as the driver takes it). The events are one transition's: the columns they share (see
        :attr:`EventColumn.per_event`) are taken, and their times bound, once, from the first."""
        if self._rows is None:
            shared = "".join(f"    s_{c.name} = {_expression(c, 'first')}\n" for c in self.columns if not c.per_event)
            items = "".join(f"{_expression(c, 'e') if c.per_event else 's_' + c.name}, " for c in self.columns)
            namespace: dict[str, Any] = {"encode": recipients_json}
            exec(f"def rows(events, bind, at):\n    first = events[0]\n{shared}"
                 f"    return [({items}at) for e in events]", namespace)
            self._rows = namespace["rows"]
        return self._rows(events, bind_time, written_at)

    def values(self, event: BroadcastEvent) -> dict[str, Any]:
        """The row's event columns as Python values for SQLAlchemy Core (times as datetimes, the
        recipients as a JSON-ready list)."""
        return self._writer("")(event, _same, _recipients_list)

    def params(self, event: BroadcastEvent, bind_time: Callable[[datetime | None], Any],
               prefix: str = "ev_", shared: bool = True) -> dict[str, Any]:
        """The ``:{prefix}*`` parameters of one row for a pre-rendered statement (times through
        ``bind_time``, the recipients as JSON text); without ``shared``, only the per-event columns
        (for a later event of a transition whose statement takes the rest from its first event's)."""
        return self._writer(prefix, shared)(event, bind_time, recipients_json)

    def _writer(self, prefix: str, shared: bool = True) -> _Writer:
        """A function building the row's values as one dict display, generated from the columns (as
        ``dataclasses`` generates ``__init__``): it runs on every command, where a loop over the
        columns cost 4-5 us more per row."""
        writer = self._writers.get((prefix, shared))
        if writer is None:
            items = ", ".join(f"{prefix + c.name!r}: {_expression(c)}" for c in self.columns if shared or c.per_event)
            namespace: dict[str, Any] = {}
            exec(f"def write(e, bind, encode):\n    return {{{items}}}", namespace)
            writer = self._writers[(prefix, shared)] = namespace["write"]
        return writer

    def rebuild(self, row: Mapping[str, Any], entity_id: Callable[[str, str], EntityId],
                time: Callable[[Any], datetime | None]) -> BroadcastEvent:
        """The event a stored row holds; ``row`` maps column names to values as the driver returned
        them, ``entity_id(kind, key)`` turns the stored key back into the id, ``time`` reads a time."""
        fields: dict[str, Any] = {}
        for column in self.columns:
            value = row[column.name]
            if value is not None:
                if column.form == "topic":
                    value = Topic(value)
                elif column.form == "status":
                    value = BroadcastStatus(value)
                elif column.form == "key":
                    value = entity_id(row["kind"], value)
                elif column.form == "time":
                    value = time(value)
                elif column.form == "recipients":
                    pairs = json.loads(value) if isinstance(value, str) else value
                    value = tuple(Recipient(role, rid) for role, rid in pairs)
            fields[column.name] = value
        return BroadcastEvent(**fields)

    def rebuild_tuple(self, values: Sequence[Any], entity_id: Callable[[str, str], EntityId],
                      time: Callable[[Any], datetime | None]) -> BroadcastEvent:
        """:meth:`rebuild` for a row in :meth:`returning` order."""
        return self.rebuild(dict(zip(self.names, values, strict=True)), entity_id, time)


_Writer = Callable[[BroadcastEvent, Callable[[Any], Any], Callable[[Any], Any]], dict[str, Any]]
_RowsWriter = Callable[[Sequence[BroadcastEvent], Callable[[Any], Any], Any], list[tuple[Any, ...]]]


def _expression(column: EventColumn, event: str = "e") -> str:
    """Python for the stored value of ``column`` of the event named ``event`` (see ``OutboxRow._writer``)."""
    if not column.name.isidentifier():
        raise ValueError(f"outbox column names must be identifiers, got {column.name!r}")
    value = f"{event}.{column.name}"
    if column.form == "key":
        return f"str({value})"
    if column.form == "time":
        return f"bind({value})"
    if column.form == "recipients":
        return f"encode({value})"
    if column.form in ("topic", "status"):
        # The member's value as Enum stores it: ``.value`` is a property, 0.1 us a read on Python 3.11.
        return f"(None if {value} is None else {value}._value_)" if column.nullable else f"{value}._value_"
    return value


def _same(value: Any) -> Any:
    return value


def _recipients_list(recipients: Sequence[Recipient]) -> list[list[str]]:
    return [[r.role, r.id] for r in recipients]


_JSON = json.JSONEncoder(separators=(",", ":"))


def recipients_json(recipients: Sequence[Recipient]) -> str:
    """The recipients column's text: ``[["customer","c-1"],["transporter","t-1"]]``, as compact JSON of
    their ``[role, id]`` pairs. Written out here (each string quoted by ``json``'s own C quoting), it costs
    a fifth of ``json``'s encoder, which sets itself up again on every call; the text is the same."""
    try:
        pairs = []
        for recipient in recipients:  # mostly the last commands' recipients again: each pair's text is kept
            pair = _PAIRS.get(recipient)
            if pair is None:
                if len(_PAIRS) >= _PAIRS_MAX:
                    _PAIRS.clear()
                pair = _PAIRS[recipient] = (f"[{encode_basestring_ascii(recipient.role)},"
                                            f"{encode_basestring_ascii(recipient.id)}]")
            pairs.append(pair)
        return "[" + ",".join(pairs) + "]"
    except TypeError:  # an id that is not a str (a custom store's?): the encoder says how it is written
        return _JSON.encode(_recipients_list(recipients))


_PAIRS: dict[Recipient, str] = {}
"""Each recent recipient's ``[role, id]`` text (emptied when it grows large)."""
_PAIRS_MAX = 4096

OUTBOX_ROW = OutboxRow((
    EventColumn("event_id", String(36), per_event=True),
    EventColumn("name", String(64), per_event=True),
    EventColumn("topic", String(32), form="topic", per_event=True),
    EventColumn("kind", String(32)),
    EventColumn("id_field", String(64)),
    EventColumn("entity_id", Text(), form="key"),  # unbounded, as schema's keys: it holds any host key
    EventColumn("status", String(32), form="status"),
    EventColumn("previous_status", String(32), nullable=True, form="status"),
    EventColumn("state_changed_at", _Tz, form="time"),
    EventColumn("version", Integer()),
    EventColumn("slots_filled", Integer()),
    EventColumn("slots_requested", Integer()),
    EventColumn("expires_at", _Tz, nullable=True, form="time"),
    EventColumn("trigger", String(32)),
    EventColumn("reason", Text(), nullable=True),
    EventColumn("recipients", JSON(), form="recipients", per_event=True),
))
"""The outbox row's event columns, in table order."""
