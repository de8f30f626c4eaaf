"""``SQLAlchemyStore``: broadcasts on SQLite (embedded default) or PostgreSQL, on the host's own
mapped models or on a standalone table.

Commands run pre-rendered SQL on the DBAPI cursor (its text in :mod:`.sql`, rendered by
:mod:`._sql_text`); everything else uses SQLAlchemy Core. A write is one transaction: the
compare-and-set UPDATE, recipients, the history row and the outbox rows. With ``tx=<Session>`` it
joins the host's transaction and the events leave only when that session commits.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, select
from sqlalchemy import inspect as sa_inspect

from ..codec import id_from_text
from ..errors import (
    BroadcastNotFound,
    InvalidArgument,
    StoreError,
)
from ..kinds import DEFAULT_KINDS, KindConfig
from ..lifecycle import Trigger
from ..records import EntityId, HistoryEntry, IdempotentOutcome, RecipientRecord
from ._after_commit import defer_until_commit
from ._host_session import session_of
from ._orm_sync import ModelSync
from ._positional import WrittenSql
from ._sql_connections import SqlConnections
from ._sql_creation import SqlCreation
from ._sql_in_place import SqlInPlace
from ._sql_outbox import SqlOutbox
from ._sql_retention import SqlRetention
from ._sql_sweep import SqlSweeper
from ._sql_tables import StoreTables, utc
from ._sql_text import EntitySql
from ._sql_transitions import SqlTransitions
from ._sql_translate import ErrorTranslator
from ._sqlite_setup import SqliteSettings
from .base import (
    Adoption,
    AfterCommit,
    Change,
    Committed,
    ExpiredBatch,
    Loaded,
    NewBroadcast,
    NewRecipients,
    OutboxBucket,
    OutboxEntry,
    Plan,
    PruneTarget,
    StatementCommand,
)
from .outbox_state import DeadLetter, DeliveryAttempt
from .schema import (
    broadcasts_table,
    due_index_ddl,
    history_table,
    idempotency_table,
    library_metadata,
    open_customer_index_ddl,
    outbox_table,
    recipients_table,
    standalone_metadata,
)
from .sql.common import table_ref
from .sql.postgresql import SINGLE_STATEMENT_EVENTS, pg_single_statement

__all__ = ["SQLAlchemyStore"]

_SEQUENCE_CATCH_UPS = 3
"""How often an insert moves a sequence that is behind and tries again (once is enough unless
concurrent inserts with explicit ids keep overtaking it)."""


class SQLAlchemyStore:
    """A :class:`~broadcast_lifecycle.stores.base.BroadcastStore` on a SQLAlchemy ``Engine``.

    ``models`` maps a kind to the host's mapped class (or ``Table``) that carries
    :class:`~broadcast_lifecycle.stores.schema.BroadcastMixin`'s columns; kinds not in it live in
    the standalone ``bl_broadcasts`` table.

    On SQLite the store's own write transactions start with ``BEGIN IMMEDIATE`` on connections set
    up by ``sqlite`` (:class:`~broadcast_lifecycle.stores._sqlite_setup.SqliteSettings`: busy timeout,
    durability, caches); the engine's connections and transactions stay as the host set them, and
    the database is put in WAL mode (docs/persistence.md, "What the library changes on your engine").
    """

    def __init__(self, engine: Engine, models: Mapping[str, Any] | None = None, *,
                 sqlite: SqliteSettings | None = None) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise InvalidArgument(f"SQLAlchemyStore supports sqlite and postgresql, not {engine.dialect.name}")
        self.engine = engine
        self._owns_engine = False
        self._pg = engine.dialect.name == "postgresql"
        # The parts, each owning its state: tables, errors, connections, then those that write on them.
        self._schema = StoreTables(engine.dialect, models or {})
        self._errors = ErrorTranslator(engine.dialect, self._schema)
        self._db = SqlConnections(engine, sqlite or SqliteSettings(), self._errors)
        self._outbox = SqlOutbox(self._db, self._schema)
        self._retention = SqlRetention(self._db)
        self._in_place = SqlInPlace(self._db, self._schema, self._committed)
        self._sweeper = SqlSweeper(self._db, self._schema)
        written = WrittenSql(self._schema.lib, engine.dialect)
        self._creation = SqlCreation(self._db, self._schema, self._errors, written, self._committed, self.load)
        self._transitions = SqlTransitions(self._db, self._schema, self._errors, written, self._in_place,
                                           self._committed, engine.dialect)
        self._orm = {kind: ModelSync(model, naive_times=not self._pg)
                     for kind, model in (models or {}).items() if not isinstance(model, Table)}
        if self._pg:
            for sql in self._schema.all():
                library = (history_table, recipients_table, outbox_table, idempotency_table)
                sql.single_apply = {(n, everyone): pg_single_statement(sql, library, engine.dialect, n, everyone)
                                    for n in SINGLE_STATEMENT_EVENTS for everyone in (False, True)[:n]}

    @classmethod
    def from_url(cls, url: str, models: Mapping[str, Any] | None = None, *, sqlite: SqliteSettings | None = None,
                 **engine_options: Any) -> SQLAlchemyStore:
        """A store on a new engine for ``url`` (e.g. ``sqlite:///broadcasts.db``)."""
        try:
            engine = create_engine(url, **engine_options)
        except ImportError as exc:
            raise driver_missing(url, exc) from exc
        store = cls(engine, models, sqlite=sqlite)
        store._owns_engine = True
        return store

    def close(self) -> None:
        """Close the store's connections: SQLite's per-thread ones and, for a store made by
        :meth:`from_url`, the engine's pool. The store opens connections again if used."""
        self._db.close()
        if self._owns_engine:
            self.engine.dispose()

    def create_all(self, kinds: Iterable[KindConfig] = DEFAULT_KINDS) -> None:
        """Create the library's tables, the standalone table (if a kind is not on a host model), the
        sweeper's partial index on host tables and the one-open-per-customer indexes of the ``kinds``
        that ask for them. Host model tables must exist already (the host creates them).
        """
        with self._db.core(None, write=True) as conn:
            kinds = tuple(kinds)
            library_metadata.create_all(conn)
            standalone = any(kind.name not in self._schema.hosts for kind in kinds)
            if standalone:
                standalone_metadata.create_all(conn)
            _require_current_columns(conn, [*library_metadata.sorted_tables,
                                            *(standalone_metadata.sorted_tables if standalone else ()),
                                            *(sql.table for sql in self._schema.hosts.values())])
            for sql in self._schema.hosts.values():
                conn.exec_driver_sql(due_index_ddl(sql.table.name, on=self._index_target(sql)))
            for kind in kinds:
                if kind.one_open_per_customer:
                    sql = self._schema.entity(kind.name)
                    conn.exec_driver_sql(open_customer_index_ddl(sql.table.name, kind.name,
                                                                 scoped=sql.table is broadcasts_table,
                                                                 on=self._index_target(sql)))
        self._in_place.forget_function()  # the PostgreSQL function may be new: ask again (after the commit)

    def _index_target(self, sql: EntitySql) -> str | None:
        """PostgreSQL: a host table in a schema of its own, named with its schema (its index goes there too)."""
        return table_ref(self.engine.dialect, sql.table) if self._pg and sql.table.schema else None

    # -- commands --------------------------------------------------------------------------

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.insert`."""
        return self._creation.insert(new, after_commit, tx)

    def adopt(self, adoption: Adoption, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :class:`~broadcast_lifecycle.stores.base.AdoptsRows`: the row the host inserted (and
        flushed, or the session flushes it now) gets its creation history row and event."""
        return self._creation.adopt(adoption, after_commit, tx)

    def _committed(self, committed: Committed, after_commit: AfterCommit, tx: object) -> Committed:
        if tx is not None and (sync := self._orm.get(committed.snapshot.kind)) is not None:
            sync.apply(session_of(tx), committed.snapshot)
        if tx is None:
            after_commit(committed)
        else:
            defer_until_commit(session_of(tx), after_commit, committed)
        return committed

    def recall(self, key: str, tx: object = None) -> IdempotentOutcome | None:
        """See :meth:`BroadcastStore.recall`."""
        if self._pg and tx is None:  # one autocommit read on the store's cursor (Core would BEGIN and COMMIT)
            with self._db.cursor(None, write=False) as cur:
                cur.execute(self._schema.lib.recall, {"idem_key": key})
                found = cur.fetchone()
            row: Mapping[str, Any] | None = None if found is None else dict(
                zip(("kind", "entity_id", "trigger", "outcome"), found, strict=True))
        else:
            i = idempotency_table.c
            with self._db.core(tx) as conn:
                row = conn.execute(select(idempotency_table).where(i.key == key)).mappings().first()
        if row is None:
            return None
        id_type = self._schema.entity(row["kind"]).pk.type.python_type
        entity_id = row["entity_id"] if id_type is str else id_type(row["entity_id"])
        outcome = json.loads(row["outcome"]) if isinstance(row["outcome"], str) else row["outcome"]
        return IdempotentOutcome.from_json(key, row["trigger"], row["kind"], entity_id, outcome)

    def load(self, kind: str, entity_id: EntityId, transporter_id: str | None = None,
             tx: object = None) -> Loaded:
        """See :meth:`BroadcastStore.load`."""
        sql = self._schema.entity(kind)
        with self._db.cursor(tx, write=False) as cur:
            return self._schema.read_loaded(cur, sql, kind, entity_id, transporter_id)

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """See :meth:`BroadcastStore.apply`."""
        return self._transitions.apply(change, after_commit, tx)

    def decides_under_lock(self) -> bool:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesUnderLock`: SQLite, whose write
        transactions take the database's write lock up front, so reading inside one costs nothing extra."""
        return not self._pg

    def decide_and_apply(self, kind: str, entity_id: EntityId, transporter_id: str | None, plan: Plan,
                         after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesUnderLock`."""
        return self._transitions.decide_and_apply(kind, entity_id, transporter_id, plan, after_commit, tx)

    def decides_in_batch(self) -> bool:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesInBatch`: PostgreSQL, where commands on one broadcast
        queue on its row lock, each with a commit of its own (SQLite's commands on one loop do not overlap)."""
        return self._pg

    def decide_and_apply_batch(self, kind: str, entity_id: EntityId,
                               plans: Sequence[tuple[str | None, Plan]]) -> list[Committed | Exception]:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesInBatch`."""
        return self._transitions.decide_and_apply_batch(kind, entity_id, plans)

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.add_recipients`."""
        return self._transitions.add_recipients(new, after_commit, tx)

    # -- queries ---------------------------------------------------------------------------

    def recipients(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[RecipientRecord, ...]:
        """See :meth:`BroadcastStore.recipients`."""
        self.load(kind, entity_id, tx=tx)
        r = recipients_table.c
        query = (select(r.transporter_id, r.notified_at, r.slots_held, r.response)
                 .where(r.kind == kind, r.entity_id == str(entity_id)).order_by(r.notified_at, r.transporter_id))
        with self._db.core(tx) as conn:
            rows = conn.execute(query).all()
        return tuple(RecipientRecord(row[0], utc(row[1]), row[2], row[3]) for row in rows)

    def history(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[HistoryEntry, ...]:
        """See :meth:`BroadcastStore.history`."""
        self._schema.lookup_id(self._schema.entity(kind), kind, entity_id)
        h = history_table.c
        query = select(history_table).where(h.kind == kind, h.entity_id == str(entity_id)).order_by(h.version)
        with self._db.core(tx) as conn:
            rows = conn.execute(query).mappings().all()
        if not rows:
            self.load(kind, entity_id, tx=tx)  # raises BroadcastNotFound for an unknown id
        status = self._schema.status
        return tuple(
            HistoryEntry(kind, entity_id,
                         status(history_table, entity_id, row["from_status"]) if row["from_status"] else None,
                         status(history_table, entity_id, row["to_status"]), row["trigger"], row["actor"],
                         row["reason"], utc(row["at"]), row["version"], dict(row["meta"] or {}))
            for row in rows
        )

    def expire_overdue(self, kind: KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> ExpiredBatch:
        """See :meth:`BroadcastStore.expire_overdue`."""
        return self._sweeper.expire_overdue(kind, now, limit, actor, with_events)

    # -- the outbox, retention and in place: the store's parts ---------------------------------

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.pending_events`."""
        return self._outbox.pending_events(limit, created_before)

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.claim_events`. PostgreSQL skips rows another relay has locked."""
        return self._outbox.claim_events(now, limit, created_before, lease_until)

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """See :meth:`BroadcastStore.mark_delivered`."""
        self._outbox.mark_delivered(event_ids, at)

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        """See :meth:`BroadcastStore.record_attempt`."""
        self._outbox.record_attempt(attempt)

    def dead_letters(self, limit: int) -> Sequence[DeadLetter]:
        """See :meth:`BroadcastStore.dead_letters`."""
        return self._outbox.dead_letters(limit)

    def outbox_summary(self) -> dict[str, OutboxBucket]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox`."""
        return self._outbox.outbox_summary()

    def outbox_of(self, kind: str, entity_id: EntityId) -> Sequence[OutboxEntry]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox`."""
        return self._outbox.outbox_of(kind, entity_id)

    def prune(self, target: PruneTarget, before: datetime, limit: int) -> int:
        """See :meth:`BroadcastStore.prune`."""
        return self._retention.prune(target, before, limit)

    def decides_in_statement(self, kind: KindConfig, trigger: Trigger) -> bool:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesInStatement`: PostgreSQL only."""
        return self._in_place.decides_in_statement(kind, trigger)

    def decide_in_statement(self, command: StatementCommand, plan: Plan,
                            after_commit: AfterCommit) -> Committed | Loaded | None:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesInStatement`: PostgreSQL only."""
        return self._in_place.decide_in_statement(command, plan, after_commit)

    def id_type(self, kind: str) -> type:
        """The Python type of ``kind``'s primary key (``int``, ``str`` or ``uuid.UUID``)."""
        return self._schema.entity(kind).pk.type.python_type

    def parse_entity_id(self, kind: str, text: str) -> EntityId:
        """``text`` as a key of ``kind``'s table (for ids typed by people); ``ValueError`` if it is not one."""
        entity_id = id_from_text(text, self.id_type(kind))
        if entity_id is None:
            raise ValueError(f"{text!r} is not {self._schema.entity(kind).keys.allowed()}")
        return entity_id

    def entity_key(self, kind: str, entity_id: EntityId) -> EntityId:
        """See :class:`~broadcast_lifecycle.stores.base.TypedKeys`: ``entity_id`` as a key of ``kind``'s
        table, a ``str`` that spells one (``"42"`` for an int key, a UUID's text) converted."""
        sql = self._schema.entity(kind)
        id_type = sql.keys.python_type
        if isinstance(entity_id, str) and id_type is not None and id_type is not str:
            typed = id_from_text(entity_id, id_type)
            entity_id = typed if typed is not None else entity_id
        if not sql.holds(entity_id):
            text = ", or its text" if id_type in (int, uuid.UUID) else ""
            raise BroadcastNotFound(kind, entity_id, expected=f"{sql.keys.allowed()}{text}")
        return entity_id


MIGRATION = "0002_broadcast_lifecycle"
"""The revision that brings a database to the library's current tables (examples/migrations/versions)."""


def driver_missing(url: str, exc: ImportError) -> InvalidArgument:
    """The error for an engine URL whose driver is not installed (and may not be one the store runs on)."""
    return InvalidArgument(
        f"{url.split('://', 1)[0]}:// needs a driver that is not installed ({exc}); the store runs on "
        "SQLite and PostgreSQL through these: SQLAlchemyStore on sqlite:// or postgresql+psycopg:// (extra "
        "[postgres]), AsyncSQLAlchemyStore on sqlite+aiosqlite:// (extra [async]) or postgresql+psycopg:// "
        "(extras [async,postgres])")


def _require_current_columns(conn: Connection, tables: Iterable[Table]) -> None:
    """Refuse a database whose existing tables lack columns the library writes: ``create_all`` creates
    missing tables only, so an older database would otherwise fail on every write."""
    inspector = sa_inspect(conn)
    for table in tables:
        found = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
        missing = [column.name for column in table.columns if column.name not in found]
        if missing:
            raise StoreError(
                f"table {table.name} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: the "
                f"database predates the library's schema, and create_all() creates missing tables but never "
                f"alters existing ones. Run migration {MIGRATION} (examples/migrations/versions/{MIGRATION}.py, "
                "or your own revision that adds them; docs/persistence.md)")


