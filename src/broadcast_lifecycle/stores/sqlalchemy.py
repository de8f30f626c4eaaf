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
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, insert, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from ..codec import id_from_text
from ..errors import (
    BroadcastError,
    BroadcastNotFound,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    OpenBroadcastExists,
    StoreError,
    show_id,
    show_value,
)
from ..events import BroadcastEvent, Recipient, Topic
from ..kinds import DEFAULT_KINDS, KindConfig
from ..lifecycle import Trigger
from ..records import BroadcastSnapshot, EntityId, HistoryEntry, IdempotentOutcome, RecipientRecord
from ..states import BroadcastStatus
from ._after_commit import defer_until_commit
from ._host_session import session_of
from ._orm_sync import ModelSync
from ._outbox_row import OUTBOX_ROW, WRITTEN_AT
from ._positional import LOAD, UPDATE, Positional, WrittenSql
from ._sql_connections import LostRace, SqlConnections
from ._sql_create import RowInsert, with_python_defaults
from ._sql_errors import LIFECYCLE_COLUMNS, UNDEFINED_FUNCTION, sqlstate
from ._sql_in_place import SqlInPlace
from ._sql_outbox import SqlOutbox
from ._sql_retention import SqlRetention
from ._sql_sweep import SqlSweeper
from ._sql_tables import StoreTables, utc
from ._sql_text import EntitySql, dumps
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
from .pg_create import PgCreate, Rendered
from .schema import (
    broadcasts_table,
    due_index_ddl,
    history_table,
    idempotency_table,
    library_metadata,
    open_customer_index_ddl,
    open_customer_index_name,
    outbox_table,
    recipients_table,
    standalone_metadata,
)
from .sql.postgresql import SINGLE_STATEMENT_EVENTS, catch_up_sequence, pg_change_in_place, pg_single_statement

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
        # The general write path's statements, run with positional values (see ._positional).
        self._written = WrittenSql(self._schema.lib, engine.dialect)
        self._updates = {sql.table.name: Positional(sql.update, UPDATE, engine.dialect) for sql in self._schema.all()}
        self._loads = {  # by table and whether the command's transporter's holding is read
            (sql.table.name, holding): Positional(sql.load if holding else sql.load_row, LOAD, engine.dialect)
            for sql in self._schema.all() for holding in (True, False)}
        self._db = SqlConnections(engine, sqlite or SqliteSettings(), self._errors)
        self._outbox = SqlOutbox(self._db, self._schema)
        self._retention = SqlRetention(self._db)
        self._in_place = SqlInPlace(self._db, self._schema, self._committed)
        self._sweeper = SqlSweeper(self._db, self._schema)
        self._creates: dict[str, PgCreate] = {}
        self._row_inserts: dict[str, RowInsert] = {}
        self._orm = {kind: ModelSync(model, naive_times=not self._pg)
                     for kind, model in (models or {}).items() if not isinstance(model, Table)}
        if self._pg:
            for sql in self._schema.all():
                library = (history_table, recipients_table, outbox_table, idempotency_table)
                sql.single_apply = {(n, everyone): pg_single_statement(sql, library, engine.dialect, n, everyone)
                                    for n in SINGLE_STATEMENT_EVENTS for everyone in (False, True)[:n]}
                sql.in_place = {variant: pg_change_in_place(sql, variant, library, engine.dialect)
                                for variant in ("accept", "accept_partial", "release")}

    @classmethod
    def from_url(cls, url: str, models: Mapping[str, Any] | None = None, *, sqlite: SqliteSettings | None = None,
                 **engine_options: Any) -> SQLAlchemyStore:
        """A store on a new engine for ``url`` (e.g. ``sqlite:///broadcasts.db``)."""
        store = cls(create_engine(url, **engine_options), models, sqlite=sqlite)
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
                conn.exec_driver_sql(due_index_ddl(sql.table.name))
            for kind in kinds:
                if kind.one_open_per_customer:
                    sql = self._schema.entity(kind.name)
                    conn.exec_driver_sql(open_customer_index_ddl(sql.table.name, kind.name,
                                                                 scoped=sql.table is broadcasts_table))
        self._in_place.forget_function()  # the PostgreSQL function may be new: ask again (after the commit)

    # -- commands --------------------------------------------------------------------------

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.insert`."""
        kind = new.kind.name
        sql = self._schema.entity(kind)
        self._check_new(sql, new)
        values: dict[str, Any] = {
            "status": BroadcastStatus.CREATED.value, "customer_id": new.customer_id,
            "state_changed_at": new.at, "created_at": new.at, "version": 1,
            "slots_requested": new.slots_requested, "slots_filled": 0, "expires_at": new.expires_at,
        }
        if sql.table is broadcasts_table:
            values["kind"] = kind
        if new.entity_id is not None:
            values[sql.pk.name] = new.entity_id
        if new.columns:
            values.update(_host_columns(sql, new, values))
        if self._pg and tx is None:
            return self._committed(self._insert_in_one_statement(sql, new, values), after_commit, None)
        if not self._pg and tx is None and (inserted := self._insert_on_cursor(sql, new, values)) is not None:
            return self._committed(inserted, after_commit, None)
        with self._db.core(tx, write=True) as conn:
            entity_id = self._insert_row(conn, sql, new, values)
            committed = self._record_creation(conn, new, new.snapshot(entity_id))
        return self._committed(committed, after_commit, tx)

    def _insert_on_cursor(self, sql: EntitySql, new: NewBroadcast, values: dict[str, Any]) -> Committed | None:
        """SQLite without a host transaction: the row (pre-rendered, see :mod:`._sql_create`), its history
        row, its events and its key in one ``BEGIN IMMEDIATE`` transaction on the store's connection.
        ``None`` when the host model has defaults only SQLAlchemy computes (then Core inserts it)."""
        inserter = self._row_inserts.get(sql.table.name)
        if inserter is None:
            inserter = self._row_inserts[sql.table.name] = RowInsert(sql.table, self.engine.dialect)
        if not inserter.renders:
            return None
        statement, params, known = inserter.statement(values)
        integrity_error = self.engine.dialect.loaded_dbapi.IntegrityError

        def write(cur: Any) -> Committed:
            try:
                cur.execute(statement, params)
            except integrity_error as exc:
                raise self._refused_insert(exc, sql, new) from exc
            row = cur.fetchone()
            if row is None:  # only a given key (or a host default's) can be taken: SQLite's own keys never are
                raise DuplicateBroadcast(new.kind.name, known)
            snapshot = new.snapshot(known if known is not None else row[0])
            events = new.events(snapshot)
            lib, history = self._schema.lib, self._written.history
            kind, key, at = snapshot.kind, str(snapshot.id), lib.time.bind(new.at)
            entry = new.history_entry(snapshot.id)
            cur.execute(history.text, history.params((
                kind, key, None, entry.to_status.value, entry.trigger, entry.actor, entry.reason,
                dumps(entry.metadata) if entry.metadata else "{}", at, entry.version)))
            cur.executemany(lib.add_events, OUTBOX_ROW.rows(events, lib.time.bind, at))
            if (outcome := new.outcome(snapshot)) is not None:
                try:
                    cur.execute(lib.add_key, {"kind": kind, "key": key, "at": at, "idem_key": outcome.key,
                                              "trigger": "create", "idem_outcome": dumps(outcome.to_json())})
                except integrity_error as exc:
                    raise IdempotencyKeyReused(outcome.key, "is already recorded") from exc
            return Committed(snapshot, events)

        return self._db.transaction(None, write)

    def _insert_in_one_statement(self, sql: EntitySql, new: NewBroadcast, values: dict[str, Any]) -> Committed:
        """PostgreSQL without a host transaction: the row, its history row, its events and its key in
        one autocommit statement (see :mod:`.pg_create`), without a SAVEPOINT. A taken explicit id is
        ``DuplicateBroadcast``; an automatic id that was taken moves the sequence, as in :meth:`_insert_row`."""
        kind = new.kind.name
        placeholder = new.snapshot(new.entity_id if new.entity_id is not None else 0)
        events = new.events(placeholder)  # their ids and fields; the entity id is filled in below
        rows: list[tuple[Table, dict[str, Any]]] = [(history_table, _history_row(new.history_entry(0)))]
        rows += [(outbox_table, {**OUTBOX_ROW.values(event), WRITTEN_AT: new.at}) for event in events]
        if (outcome := new.outcome(placeholder)) is not None:
            rows.append((idempotency_table, {"key": outcome.key, "kind": kind, "entity_id": "", "trigger": "create",
                                             "outcome": outcome.to_json(), "created_at": new.at}))
        create = self._creates.get(sql.table.name)
        if create is None:
            create = self._creates[sql.table.name] = PgCreate(sql.table, self.engine.dialect)
        statement, params = create.statement(with_python_defaults(sql.table, values), rows)
        rendered = create.rendered(statement)
        for _ in range(_SEQUENCE_CATCH_UPS + 1):
            with self._errors.wrap("write"):
                try:
                    if rendered is not None:  # the store's own cursor, as its other one-statement writes
                        entity_id = self._run_rendered(rendered, params)
                    else:
                        with self.engine.connect() as conn:
                            conn.execution_options(isolation_level="AUTOCOMMIT")
                            entity_id = conn.execute(statement, params).scalar()
                except (IntegrityError, self.engine.dialect.loaded_dbapi.IntegrityError) as exc:
                    error = self._refused_insert(getattr(exc, "orig", exc), sql, new)
                    if isinstance(error, IdempotencyKeyReused) and outcome is not None:
                        error = IdempotencyKeyReused(outcome.key, "is already recorded")
                    raise error from exc
            if entity_id is not None:
                snapshot = new.snapshot(entity_id)
                return Committed(snapshot, tuple(replace(event, entity_id=entity_id) for event in events))
            if new.entity_id is not None:
                raise DuplicateBroadcast(kind, new.entity_id)
            with self._db.core(None, write=True) as conn:
                if not self._catch_up_sequence(conn, sql):
                    break
        raise StoreError(f"could not insert {kind}: every id the database picked for {sql.keys.where()} was taken; "
                         "its sequence is behind the ids in the table (rows inserted with explicit ids)")

    def _run_rendered(self, rendered: Rendered, params: dict[str, Any]) -> Any:
        """Run a rendered one-statement creation on the store's own cursor, in autocommit: its first
        column, or ``None`` for no row. A constraint's refusal comes out as the driver's error, as from Core."""
        try:
            with self._db.cursor(None, write=True, single=True) as cur:
                cur.execute(rendered[0], rendered[1](params))
                row = cur.fetchone()
        except StoreError as exc:
            if isinstance(exc.__cause__, self.engine.dialect.loaded_dbapi.IntegrityError):
                raise exc.__cause__ from None
            raise
        return row[0] if row is not None else None

    def adopt(self, adoption: Adoption, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :class:`~broadcast_lifecycle.stores.base.AdoptsRows`: the row the host inserted (and
        flushed, or the session flushes it now) gets its creation history row and event."""
        kind = adoption.kind.name
        with self._db.core(tx, write=True) as conn:
            if tx is not None:
                session_of(tx).flush()
            snapshot = self.load(kind, adoption.entity_id, tx=tx).snapshot
            h = history_table.c
            recorded = conn.execute(select(h.version).where(
                h.kind == kind, h.entity_id == str(adoption.entity_id)).limit(1)).first()
            if recorded is not None or (snapshot.status, snapshot.version, snapshot.slots_filled) != (
                    BroadcastStatus.CREATED, 1, 0):
                raise InvalidArgument(
                    f"{kind} {show_id(adoption.entity_id)} cannot be adopted: it is {snapshot.status.value} at version "
                    f"{snapshot.version}{' with history' if recorded else ''}; adopt takes a row the host inserted "
                    "in state created, at version 1, with no slots filled and no history")
            committed = self._record_creation(conn, adoption.creation(snapshot), snapshot)
        return self._committed(committed, after_commit, tx)

    def _record_creation(self, conn: Any, new: NewBroadcast, snapshot: BroadcastSnapshot) -> Committed:
        """The creation's history row, idempotency record and outbox rows, on ``conn``."""
        entity_id = snapshot.id
        events = new.events(snapshot)
        conn.execute(insert(history_table), [_history_row(new.history_entry(entity_id))])
        if (outcome := new.outcome(snapshot)) is not None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(idempotency_table).values(
                        key=outcome.key, kind=snapshot.kind, entity_id=str(entity_id), trigger="create",
                        outcome=outcome.to_json(), created_at=new.at))
            except IntegrityError as exc:
                error = self._errors.database_error(exc.orig, f"record the key of {snapshot.kind} {show_id(entity_id)}")
                raise (IdempotencyKeyReused(outcome.key, "is already recorded")
                       if isinstance(error, IdempotencyKeyReused) else error) from exc
        conn.execute(insert(outbox_table), [{**OUTBOX_ROW.values(e), WRITTEN_AT: new.at} for e in events])
        return Committed(snapshot, events)

    def _committed(self, committed: Committed, after_commit: AfterCommit, tx: object) -> Committed:
        if tx is not None and (sync := self._orm.get(committed.snapshot.kind)) is not None:
            sync.apply(session_of(tx), committed.snapshot)
        if tx is None:
            after_commit(committed)
        else:
            defer_until_commit(session_of(tx), after_commit, committed)
        return committed

    @staticmethod
    def _check_new(sql: EntitySql, new: NewBroadcast) -> None:
        """``InvalidArgument`` for an id or customer id the kind's table cannot hold (its type, range
        or, on PostgreSQL, its length), before anything is sent."""
        kind = new.kind.name
        if new.entity_id is not None and not sql.holds(new.entity_id):
            raise InvalidArgument(f"entity_id must be {sql.keys.allowed()} for kind {kind!r} (its key is "
                                  f"{sql.keys.where()}), got {show_value(new.entity_id)}")
        if not sql.customers.holds(new.customer_id):
            raise InvalidArgument(f"customer_id must be {sql.customers.allowed()} for kind {kind!r} "
                                  f"({sql.customers.where()}), got {len(new.customer_id)} characters")

    def _insert_row(self, conn: Connection, sql: EntitySql, new: NewBroadcast, values: dict[str, Any]) -> Any:
        """Insert the broadcast's row and return its id. A taken explicit id is ``DuplicateBroadcast``
        (the insert does nothing on a key conflict, so no error needs reading); the policy's index is
        ``OpenBroadcastExists``; any other constraint a ``StoreError`` naming it.

        PostgreSQL: an automatic id can be taken too, when rows were inserted with explicit ids
        (ours or the host's) the key's sequence has not reached yet. The sequence is then moved past
        the table's highest id and the insert retried.
        """
        kind = new.kind.name
        dialect_insert = pg_insert if self._pg else sqlite_insert
        statement = (dialect_insert(sql.table).values(values)
                     .on_conflict_do_nothing(index_elements=[sql.pk]).returning(sql.pk))
        for _ in range(_SEQUENCE_CATCH_UPS + 1):
            try:
                with conn.begin_nested():
                    entity_id = conn.execute(statement).scalar()
            except IntegrityError as exc:
                raise self._refused_insert(exc.orig, sql, new) from exc
            if entity_id is not None:
                return entity_id
            if new.entity_id is not None:
                raise DuplicateBroadcast(kind, new.entity_id)
            if not self._catch_up_sequence(conn, sql):
                break
        raise StoreError(f"could not insert {kind}: every id the database picked for {sql.keys.where()} was taken; "
                         "its sequence is behind the ids in the table (rows inserted with explicit ids)")

    def _refused_insert(self, cause: BaseException | None, sql: EntitySql, new: NewBroadcast) -> BroadcastError:
        kind = new.kind.name
        policy = new.kind.one_open_per_customer
        broken = self._errors.violation(cause, kind if policy else None)
        index = open_customer_index_name(sql.table.name, kind)
        if policy and broken is not None and broken.rule == "unique" and broken.constraint in (index, index[:63]):
            return OpenBroadcastExists(kind, new.customer_id)  # (PostgreSQL cuts names at 63 bytes)
        return self._errors.database_error(cause, f"insert {kind}", kind if policy else None)

    def _catch_up_sequence(self, conn: Connection, sql: EntitySql) -> bool:
        """PostgreSQL: move the key's sequence past the table's highest id (never back); False when
        the key has no sequence (or on SQLite, whose automatic ids always follow the highest)."""
        if not self._pg:
            return False
        table = self.engine.dialect.identifier_preparer.format_table(sql.table)
        moved = conn.execute(text(catch_up_sequence(sql.table, self.engine.dialect)),
                             {"table": table, "column": sql.pk.name}).first()
        return moved is not None

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
        try:
            return self._apply(change, after_commit, tx)
        except StoreError as exc:
            if not self._errors.breaks_open_policy(exc, change.kind):
                raise
            raise _second_open(change) from exc

    def _apply(self, change: Change, after_commit: AfterCommit, tx: object) -> Committed | None:
        sql = self._schema.entity(change.before.kind)
        # A re-offer goes to the transporters holding no slot: one statement lists them only when it moves
        # no holding itself (activate); a release's re-offer lists them after its write, on the general path.
        if sql.single_apply and tx is None and not (change.decision.fill_delta
                                                    and Topic.OFFERED in change.decision.topics):
            everyone = change.needs_recipients  # its last event goes to every notified transporter (or re-offer)
            if not everyone or (not change.recipients and self._in_place.has_everyone_function()):
                after = change.after()
                events = change.events(after, ())
                statement = sql.single_apply.get((len(events), everyone))
                if statement is not None:
                    return self._apply_in_one_statement(statement, sql, change, after, events, everyone, after_commit)
        try:
            committed = self._db.transaction(tx, lambda cur: self._write(cur, sql, change))
        except LostRace:
            return None
        return self._committed(committed, after_commit, tx)

    def decides_under_lock(self) -> bool:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesUnderLock`: SQLite, whose write
        transactions take the database's write lock up front, so reading inside one costs nothing extra."""
        return not self._pg

    def decide_and_apply(self, kind: str, entity_id: EntityId, transporter_id: str | None, plan: Plan,
                         after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesUnderLock`."""
        sql = self._schema.entity(kind)
        load, schema = self._loads[(sql.table.name, transporter_id is not None)], self._schema
        planned: list[Change] = []

        def decide_and_write(cur: Any) -> Committed:
            cur.execute(load.text, load.params((  # as StoreTables.read_loaded does, positional
                kind, str(entity_id), transporter_id or "", schema.lookup_id(sql, kind, entity_id))))
            planned.append(plan(schema.loaded(sql, kind, entity_id, cur.fetchone())))
            return self._write(cur, sql, planned[0])

        try:
            committed = self._db.transaction(tx, decide_and_write)
        except LostRace:
            return None
        except StoreError as exc:
            if not planned or not self._errors.breaks_open_policy(exc, planned[0].kind):
                raise
            raise _second_open(planned[0]) from exc
        return self._committed(committed, after_commit, tx)

    def _write(self, cur: Any, sql: EntitySql, change: Change) -> Committed:
        """The statements of ``change`` on an open write transaction; ``LostRace`` if the
        compare-and-set matched no row."""
        before, decision = change.before, change.decision
        lib = self._schema.lib
        kind, key, at = before.kind, str(before.id), lib.time.bind(change.at)
        trigger, to_status = decision.trigger.value, decision.to_status.value
        after = change.after()
        update, written = self._updates[sql.table.name], self._written
        cur.execute(update.text, update.params((  # in the declared orders of ._positional
            to_status, at, after.version, decision.fill_delta, sql.time.bind(decision.expires_at),
            sql.id_param(before.id), kind, before.version)))
        if cur.rowcount != 1:
            raise LostRace
        if change.recipients:
            cur.executemany(written.recipient.text, [written.recipient.params((kind, key, t, at))
                                                     for t in change.recipients])
        if change.transporter_id is not None and decision.fill_delta:
            cur.execute(written.hold.text, written.hold.params((
                decision.fill_delta, trigger, at, kind, key, change.transporter_id)))
        if change.needs_recipients:
            cur.execute(lib.list_recipients, {"kind": kind, "key": key})
            rows = cur.fetchall()
            events = change.events(after, [row[0] for row in rows], {row[0] for row in rows if row[1] > 0})
        else:
            events = change.events(after, ())
        cur.execute(written.history.text, written.history.params((
            kind, key, decision.from_status.value, to_status, trigger, change.actor, change.reason,
            dumps(change.metadata) if change.metadata else "{}", at, after.version)))
        cur.executemany(lib.add_events, OUTBOX_ROW.rows(events, lib.time.bind, at))
        if (outcome := change.outcome(after)) is not None:
            cur.execute(lib.add_key, {"kind": kind, "key": key, "at": at, "idem_key": outcome.key,
                                      "trigger": trigger, "idem_outcome": dumps(outcome.to_json())})
        return Committed(after, events)

    def _apply_in_one_statement(self, statement: str, sql: EntitySql, change: Change, after: BroadcastSnapshot,
                                events: tuple[BroadcastEvent, ...], everyone: bool,
                                after_commit: AfterCommit) -> Committed | None:
        """PostgreSQL: one round trip, atomic on its own (autocommit). With ``everyone`` the last event
        goes to every notified transporter, listed by the statement (see ``sql.postgresql.pg_single_statement``)."""
        before, decision = change.before, change.decision
        bind = self._schema.lib.time.bind
        base = {"kind": before.kind, "key": str(before.id), "at": bind(change.at)}
        entry = change.history_entry()
        params = {
            **base, "id": sql.id_param(before.id), "to_status": decision.to_status.value,
            "new_version": after.version, "delta": decision.fill_delta,
            "expires_at": sql.time.bind(decision.expires_at), "version": before.version,
            "transporters": list(change.recipients), "transporter": change.transporter_id or "",
            "response": decision.trigger.value, "from_status": decision.from_status.value,
            "trigger": entry.trigger, "actor": entry.actor, "reason": entry.reason, "meta": dumps(entry.metadata),
            "idem_key": change.idempotency_key,
            "idem_outcome": dumps(outcome.to_json()) if (outcome := change.outcome(after)) is not None else None,
        }
        for i, event in enumerate(events):
            params.update(OUTBOX_ROW.params(event, bind, prefix=f"ev{i}_", shared=not i))
        if everyone:  # no customer: the function lists a re-offer's recipients
            params["customer"] = None if events[-1].topic is Topic.OFFERED else before.customer_id
        try:
            with self._db.cursor(None, write=True, single=True) as cur:
                cur.execute(statement, params)
                applied, addressed = cur.fetchone()
        except StoreError as exc:
            if not everyone or sqlstate(exc.__cause__) != UNDEFINED_FUNCTION:
                raise
            self._in_place.function_went_missing()  # nothing was written: take the general path
            return self.apply(change, after_commit)
        if applied != 1:
            return None
        if everyone:
            pairs = json.loads(addressed) if isinstance(addressed, str) else addressed
            events = (*events[:-1], replace(events[-1], recipients=tuple(Recipient(role, rid) for role, rid in pairs)))
        return self._committed(Committed(after, events), after_commit, None)

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.add_recipients`. Locks the broadcast row, so a concurrent
        terminal transition either sees the new recipients or makes this call see it closed."""
        kind = new.kind.name
        sql, lib = self._schema.entity(kind), self._schema.lib
        base = {"kind": kind, "key": str(new.entity_id), "at": lib.time.bind(new.at)}

        def write(cur: Any) -> Committed:
            events: tuple[BroadcastEvent, ...] = ()
            snapshot = self._schema.read_loaded(cur, sql, kind, new.entity_id, None, sql.load_for_update).snapshot
            if snapshot.status in new.open_states:
                cur.execute(lib.list_recipients, base)
                known = {row[0] for row in cur.fetchall()}
                added = [t for t in new.transporters if t not in known]
                if added:
                    cur.executemany(lib.add_recipient, [{**base, "transporter": t} for t in added])
                events = new.events(snapshot, added)
                if events:
                    cur.executemany(lib.add_events, OUTBOX_ROW.rows(events, lib.time.bind, base["at"]))
            return Committed(snapshot, events)

        committed = self._db.transaction(tx, write)
        return self._committed(committed, after_commit, tx) if committed.events else committed

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

    def change_in_place(self, kind: KindConfig, trigger: Trigger, entity_id: EntityId, transporter_id: str,
                        slots: int, at: datetime, after_commit: AfterCommit) -> Committed | Loaded | None:
        """See :class:`~broadcast_lifecycle.stores.base.ChangesInPlace`: PostgreSQL only (else ``None``)."""
        return self._in_place.change_in_place(kind, trigger, entity_id, transporter_id, slots, at, after_commit)

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


def _require_current_columns(conn: Connection, tables: Iterable[Table]) -> None:
    """Refuse a database whose existing tables lack columns the library writes: ``create_all`` creates
    missing tables only, so an older database would otherwise fail on every write."""
    inspector = sa_inspect(conn)
    for table in tables:
        found = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column.name for column in table.columns if column.name not in found]
        if missing:
            raise StoreError(
                f"table {table.name} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: the "
                f"database predates the library's schema, and create_all() creates missing tables but never "
                f"alters existing ones. Run migration {MIGRATION} (examples/migrations/versions/{MIGRATION}.py, "
                "or your own revision that adds them; docs/persistence.md)")


def _second_open(change: Change) -> OpenBroadcastExists:
    """The refusal of ``change``, which opened its broadcast again while the customer has another
    open one of a kind that allows one (the policy's index refused the write)."""
    before = change.before
    return OpenBroadcastExists(before.kind, before.customer_id, entity_id=before.id, from_state=before.status.value,
                               trigger=change.decision.trigger.value)


def _history_row(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "kind": entry.kind, "entity_id": str(entry.entity_id),
        "from_status": entry.from_status.value if entry.from_status else None,
        "to_status": entry.to_status.value, "trigger": entry.trigger, "actor": entry.actor,
        "reason": entry.reason, "meta": entry.metadata, "at": entry.at, "version": entry.version,
    }


def _host_columns(sql: EntitySql, new: NewBroadcast, lifecycle: Mapping[str, Any]) -> dict[str, Any]:
    """``new.columns`` checked against the kind's table: only the host's own columns of a host model."""
    kind = new.kind.name
    if sql.table is broadcasts_table:
        raise InvalidArgument(f"columns= needs a host model for kind {kind!r}: the standalone table "
                              f"{broadcasts_table.name} has no columns of yours (pass models= to SQLAlchemyStore)")
    own = {c.name for c in sql.table.columns} - set(lifecycle) - {sql.pk.name, "kind"} - LIFECYCLE_COLUMNS
    unknown = sorted(set(new.columns) - own)
    if unknown:
        raise InvalidArgument(f"columns= names {', '.join(unknown)}, which are not columns of {sql.table.name} "
                              f"the host may set (allowed: {', '.join(sorted(own)) or 'none'})")
    return dict(new.columns)

