"""The differential machine of ``test_stateful_stores.py`` reaches every write path of the SQL store:
a fixed script of its rules, with the store's internal paths counted, on SQLite and PostgreSQL.

This pins what the random runs rely on: that the machine's routes (plain, reason, key, host
session, guarded; dispatch or relay) do reach each path, so a path the script no longer reaches
(because the choice in ``BroadcastLifecycle._path`` or in the store moved) fails here by name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from test_stateful import KINDS, Key
from test_stateful_stores import StoreMachine

from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

PATHS = {
    "postgresql": {
        "decide_in_statement": "a transition decided by its own statement, no read (accept, release, terminal ones)",
        "_apply_in_one_statement": "a read, then a transition in one statement (a key, a host guard)",
        "_write": "the multi-statement write (in a host session)",
        "_insert_in_one_statement": "create in one statement",
        "_insert_row": "create through Core (in a host session)",
        "add_recipients": "notify_more",
        "expire_overdue": "the set-wise sweep",
    },
    "sqlite": {
        "decide_and_apply": "decide under the write lock",
        "_write": "the write under the lock",
        "_insert_on_cursor": "create on the store's connection",
        "_insert_row": "create through Core (in a host session)",
        "add_recipients": "notify_more",
        "expire_overdue": "the set-wise sweep",
    },
}


def _count(store: SQLAlchemyStore, names: list[str]) -> Counter[str]:
    """Count calls of the methods ``names`` of the store or of its creation and transition parts
    (wrapping them on those instances)."""
    calls: Counter[str] = Counter()

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)
        return call

    owners = (store, store._creation, store._transitions)
    for name in names:
        owner = next(o for o in owners if hasattr(o, name))
        setattr(owner, name, counting(name, getattr(owner, name)))
    return calls


def test_the_machine_reaches_every_write_path(database_url: str) -> None:
    """A script of the machine's rules takes every path of the store, each checked against the reference."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all(KINDS)
    paths = PATHS[store.engine.dialect.name]
    calls = _count(store, list(paths))
    machine = type("Scripted", (StoreMachine,), {"shared_store": store})()

    def step(route: str, rule: Callable[[], object]) -> object:
        machine.choose_route(route)
        result = rule()
        machine.lifecycle_invariants()
        machine.agrees_with_reference()
        return result

    def key(made: object) -> Key:
        assert isinstance(made, tuple)
        return made

    filled = key(step("plain", lambda: machine.create("booking", "c1", 2, None)))
    step("plain", lambda: machine.start_broadcast(filled, ["t1", "t2"]))
    step("plain", lambda: machine.notify_more(filled, ["t3"]))
    step("plain", lambda: machine.activate(filled, "ttl", 30))
    step("plain", lambda: machine.accept(filled, "t1", 1))
    step("plain", lambda: machine.release(filled, "t1", 1))
    step("reason", lambda: machine.accept(filled, "t2", 1))
    step("session", lambda: machine.accept(filled, "t3", 1))
    step("guarded", lambda: machine.start_trip(filled))
    step("plain", lambda: machine.complete(filled))
    swept = key(step("session", lambda: machine.create("order", "c2", 1, 10)))
    step("key", lambda: machine.start_broadcast(swept, ["t1"]))
    machine.switch_delivery()  # the relay delivers what the outbox holds; the sweep reads nothing back
    machine.move_clock(20)
    step("plain", lambda: machine.expire_due(None, 1000))
    machine.switch_delivery()
    late = key(step("plain", lambda: machine.create("booking", "c2", 1, 5)))
    machine.move_clock(10)
    step("plain", lambda: machine.expire_due(None, 1000))
    cancelled = key(step("key", lambda: machine.create("booking", "c1", 1, None)))
    step("plain", lambda: machine.cancel(cancelled))
    machine.teardown()
    assert {(name, paths[name]) for name in paths if calls[name] == 0} == set()
    assert machine.store.engine.dialect.name == store.engine.dialect.name and late in machine.ref_ids
    store.close()
