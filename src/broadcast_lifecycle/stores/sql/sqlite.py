"""Statements only SQLite runs: the sweep through a temporary table, with its own event ids and
recipient lists built in SQL (placeholders ``:name``, as sqlite3 takes them)."""

from __future__ import annotations

from sqlalchemy import Dialect

from .common import (
    CHANGED_TOPIC,
    EXPIRED,
    EXPIRED_TOPIC,
    SweepTables,
    sweep_history,
    sweep_outbox_row,
    sweep_overdue,
    sweep_returning,
)

__all__ = ["DUE_TABLE", "sweep_statements", "uuid7"]

DUE_TABLE = "bl_due"
"""The sweep's temporary table (in ``temp``): the batch of due broadcasts."""

# SQLite's event ids are UUIDv7 (RFC 9562) with a counter (its "method 1"): the wall-clock
# milliseconds of the batch, then the row's place in the batch, then 48 random bits. Every batch's ids
# therefore sort after the previous batch's and in the order they are inserted, so the outbox's
# primary-key index only grows at its end. (Ids that share the sweep's ``now`` and differ only in
# random bits would land all over that index: a sweep of 50,000 broadcasts in batches of 1,000 then
# rewrote the whole index at every commit, 3x the pages the sweep needs.)
_COUNTER_BITS = 26
_EXPIRED_COUNTER = 1 << (_COUNTER_BITS - 1)
"""Added to the expired events' counter, so they sort after the batch's state-changed events."""


def uuid7(counter: str) -> str:
    """SQL for a UUIDv7 after ``:ev_ms``: version 7, the 26-bit ``counter`` in rand_a and the top of
    rand_b (after the variant bits), then 48 random bits."""
    return (f"printf('%s7%03x-%x%03x-%012x', :ev_ms, (({counter}) >> 14) & 4095, 8 | ((({counter}) >> 12) & 3), "
            f"({counter}) & 4095, random() & 281474976710655)")


def _hex_as_uuid(column: str) -> str:
    """The 32 hex digits in ``column``, shaped like a UUID (8-4-4-4-12)."""
    parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    return " || '-' || ".join(f"substr({column}, {start}, {length})" for start, length in parts)


def sweep_statements(tables: SweepTables, dialect: Dialect, uuid_key: bool) -> tuple[list[str], list[str]]:
    """The sweep of one batch, in one transaction: fill the temporary table with the due rows, expire
    them, write their history and outbox rows; with the outbox INSERTs returning their rows (for
    dispatch) or not (for the relay). ``uuid_key``: the key is a UUID stored as 32 hex digits."""
    table, pk, _ = tables.names(dialect)
    due = f"temp.{DUE_TABLE}"
    returning = sweep_returning(dialect)
    key = f"lower({_hex_as_uuid(pk)})" if uuid_key else f"CAST({pk} AS TEXT)"
    # The transporters' ids joined by the text between two of them: no string built per transporter.
    everyone = ("'[[\"customer\",' || json_quote(d.customer_id) || coalesce((SELECT '],[\"transporter\",' || "
                "group_concat(q, '],[\"transporter\",') FROM (SELECT json_quote(r.transporter_id) AS q "
                f"FROM {tables.recipients.name} r WHERE r.kind = :kind AND r.entity_id = d.key "
                "ORDER BY r.notified_at, r.transporter_id)), '') || ']]'")
    changed = sweep_outbox_row(tables, dialect, event_id=uuid7("d.rowid"), name=":changed_name",
                               topic=CHANGED_TOPIC, due=due,
                               recipients="'[[\"customer\",' || json_quote(d.customer_id) || ']]'")
    expired = sweep_outbox_row(tables, dialect, event_id=uuid7(f"d.rowid + {_EXPIRED_COUNTER}"),
                               name=":expired_name", topic=EXPIRED_TOPIC, due=due, recipients=everyone)
    prepare = [
        f"CREATE TEMP TABLE IF NOT EXISTS {DUE_TABLE} (id, key, old_status, customer_id, version, slots_filled, "
        "slots_requested, expires_at)",
        f"DELETE FROM {due}",
        f"INSERT INTO {due} SELECT {pk}, {key}, status, customer_id, version + 1, slots_filled, "
        f"slots_requested, expires_at FROM {table} WHERE {sweep_overdue(tables)}",
        f"UPDATE {table} SET status = {EXPIRED}, state_changed_at = :now, version = version + 1 "
        f"WHERE {pk} IN (SELECT id FROM {due})",
        sweep_history(tables, dialect, "'{}'", due),
    ]
    return [*prepare, changed + returning, expired + returning], [*prepare, changed, expired]
