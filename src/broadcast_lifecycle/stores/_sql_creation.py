"""The SQL store's creations, one part of it: ``create`` and ``adopt``, each the broadcast's row (or
the host's, adopted), its history row, its events and its idempotency key in one transaction.

Three ways in, by set-up: PostgreSQL without a host transaction, one autocommit statement (see
:mod:`.pg_create`); SQLite without one, pre-rendered statements on the store's own connection (see
:mod:`._sql_create`); in a host transaction, or for a model with defaults only SQLAlchemy computes,
SQLAlchemy Core in a savepoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Table, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from ..errors import (
    BroadcastError,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    OpenBroadcastExists,
    StoreError,
    show_id,
    show_value,
)
from ..records import BroadcastSnapshot, HistoryEntry
from ..states import BroadcastStatus
from ._host_session import session_of
from ._outbox_row import OUTBOX_ROW, WRITTEN_AT
from ._positional import WrittenSql
from ._sql_connections import Committing, SqlConnections
from ._sql_create import RowInsert, with_python_defaults
from ._sql_errors import LIFECYCLE_COLUMNS
from ._sql_tables import StoreTables
from ._sql_text import EntitySql, dumps
from ._sql_translate import ErrorTranslator
from .base import Adoption, AfterCommit, Committed, Loaded, NewBroadcast
from .pg_create import PgCreate, Rendered
from .schema import broadcasts_table, history_table, idempotency_table, open_customer_index_name, outbox_table
from .sql.postgresql import catch_up_sequence

__all__ = ["SqlCreation"]

_SEQUENCE_CATCH_UPS = 3
"""How often an insert moves a sequence that is behind and tries again (once is enough unless
concurrent inserts with explicit ids keep overtaking it)."""

Loader = Callable[..., Loaded]
"""The store's ``load(kind, entity_id, tx=...)``."""


class SqlCreation:
    """The creations of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`, on its
    connections (``db``), tables (``schema``) and general statements (``written``); it owns the
    rendered creation statements of each table, built on first use."""

    def __init__(self, db: SqlConnections, schema: StoreTables, errors: ErrorTranslator, written: WrittenSql,
                 committed: Committing, load: Loader) -> None:
        self._db, self._schema, self._errors, self._written = db, schema, errors, written
        self._committed, self._load = committed, load
        self.engine = db.engine
        self._pg = db.pg
        self._creates: dict[str, PgCreate] = {}
        self._row_inserts: dict[str, RowInsert] = {}

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
            snapshot = self._load(kind, adoption.entity_id, tx=tx).snapshot
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

    @staticmethod
    def _check_new(sql: EntitySql, new: NewBroadcast) -> None:
        """``InvalidArgument`` for an id or customer id the kind's table cannot hold (its type, range
        or length), before anything is sent."""
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
