"""PostgreSQL: the library's function (``bl_everyone_json``), the index pruning reads, and the probes
and DDL the store and ``schema`` run for them."""

from __future__ import annotations

from sqlalchemy import Table

__all__ = [
    "EVERYONE_FUNCTION",
    "EVERYONE_SIGNATURE",
    "OUTBOX_DELIVERED_INDEX",
    "drop_function",
    "function_is_current",
    "functions_lock",
    "has_function",
    "index_exists",
    "outbox_delivered_index_ddl",
    "pg_everyone_function_body",
    "pg_everyone_json",
    "pg_function_ddl",
]


EVERYONE_FUNCTION = "bl_everyone_json"
"""PostgreSQL: the function ``(kind, key, customer)`` returning :func:`pg_everyone_json` on a fresh
snapshot (see :func:`pg_function_ddl`); ``schema.postgresql_functions_ddl()`` creates it."""
EVERYONE_SIGNATURE = f"{EVERYONE_FUNCTION}(text, text, text)"


def pg_everyone_json(recipients: Table, customer: str, key: str, kind: str = ":kind") -> str:
    """PostgreSQL: a terminal event's recipients as a JSON array, the customer first, then every
    notified transporter by notification time and id (``customer``, ``key`` and ``kind`` are SQL
    expressions). A NULL ``customer`` lists a re-offer's recipients instead: the notified transporters
    holding no slot."""
    return ("(SELECT json_agg(x ORDER BY o, n, tid) FROM (SELECT 0 AS o, NULL::timestamptz AS n, ''::text AS tid, "
            f"json_build_array('customer', {customer}) AS x WHERE {customer} IS NOT NULL "
            "UNION ALL SELECT 1, r.notified_at, r.transporter_id, "
            f"json_build_array('transporter', r.transporter_id) FROM {recipients.name} r "
            f"WHERE r.kind = {kind} AND r.entity_id = {key} AND ({customer} IS NOT NULL OR r.slots_held = 0)) s)")


def pg_everyone_function_body(recipients: Table) -> str:
    """The body of :data:`EVERYONE_FUNCTION`: :func:`pg_everyone_json` of its arguments (kind, key,
    customer), in PL/pgSQL: never inlined into the calling statement, so the function keeps its own
    snapshot, and its query is planned once per connection (a LANGUAGE sql function's is planned at
    every call, about 0.3 ms on each terminal transition)."""
    return f" BEGIN RETURN {pg_everyone_json(recipients, '$3', '$2', kind='$1')}; END "


def pg_function_ddl(signature: str, returns: str, body: str) -> str:
    """``CREATE OR REPLACE FUNCTION`` for a library function. VOLATILE is the point: such a
    function takes a new snapshot for each query in it, so it sees what committed while its
    caller waited for a lock. A statement such as an accept that fills a broadcast (the decided
    statement, ``postgresql_decided``) takes its own snapshot when it starts, then waits for the row
    lock; what a ``notify_more`` holding that lock commits meanwhile (a new recipient) only the
    function's snapshot, taken after the lock, sees. That snapshot also sees whatever of the calling
    statement's own writes ran before the call, in an order PostgreSQL leaves undefined, so a list
    must not depend on them."""
    return f"CREATE OR REPLACE FUNCTION {signature} RETURNS {returns} LANGUAGE plpgsql VOLATILE AS $body${body}$body$"


def function_is_current() -> str:
    """Whether the function ``:signature`` exists with body ``:body`` and is VOLATILE."""
    return "SELECT prosrc = :body AND provolatile = 'v' FROM pg_proc WHERE oid = to_regprocedure(:signature)"


def functions_lock() -> str:
    """Take the transaction-scoped lock that makes one ``create_all`` at a time create the functions."""
    return "SELECT pg_advisory_xact_lock(hashtext('broadcast_lifecycle functions'))"


def drop_function(signature: str) -> str:
    """Drop the function ``signature`` if it exists."""
    return f"DROP FUNCTION IF EXISTS {signature}"


OUTBOX_DELIVERED_INDEX = "ix_bl_outbox_delivered"


def outbox_delivered_index_ddl(outbox: Table) -> str:
    """Delivered outbox rows by delivery time, for pruning."""
    return (f"CREATE INDEX IF NOT EXISTS {OUTBOX_DELIVERED_INDEX} ON {outbox.name} (delivered_at) "
            "WHERE delivered_at IS NOT NULL")


def index_exists(name: str) -> str:
    """The index ``name``'s oid, or NULL when there is none."""
    return f"SELECT to_regclass('{name}')"


def has_function(signature: str, table: str) -> str:
    """Whether the function ``signature`` exists, and whether ``table`` does (two booleans)."""
    return f"SELECT to_regprocedure('{signature}') IS NOT NULL, to_regclass('{table}') IS NOT NULL"
