"""What every part of the store contract shares: the store's hooks (make a store, release it), the
lifecycle each test drives, a clock the test moves, and a runner that needs no pytest.

The parts (``contract_*.py``) are mixins of :class:`ContractBase`; :class:`~broadcast_lifecycle.contract.StoreContract`
composes them. pytest calls :meth:`ContractBase.setup_method` and :meth:`ContractBase.teardown_method`
around each test; :func:`run_contract` does the same without pytest.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import unittest
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from .errors import InvalidArgument
from .events import BroadcastEvent
from .kinds import KindConfig
from .records import EntityId
from .results import CommandResult
from .service import BroadcastLifecycle
from .stores.base import BroadcastStore
from .testing import EventRecorder

__all__ = ["EVERY_ID_TYPE", "KINDS", "T0", "WAIT", "Clock", "ContractBase", "race", "run_contract", "without_id"]

logger = logging.getLogger(__name__)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
"""When every contract test starts."""

KINDS = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True))
"""The kinds of every contract lifecycle: ``booking``, and ``order`` with one open broadcast per customer."""

EVERY_ID_TYPE: tuple[EntityId, ...] = (424242, "777", "bk-17", UUID("12345678-1234-5678-1234-567812345678"))
"""An id of every type a broadcast may have: an int, a digit-only string, a string, a UUID."""

WAIT = 30.0
"""Seconds a thread of a race test waits for the others at its barrier before the test fails."""


class Clock:
    """The contract's clock: it moves only when a test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock by ``delta``."""
        self.now += delta


class ContractBase:
    """The hooks a store's test class fills in, and the helpers the contract's tests use."""

    explicit_ids: tuple[EntityId, ...] = EVERY_ID_TYPE
    """Ids the store keeps when the host picks them, one per type it holds (empty: it always picks ids).
    A store on integer keys sets ``(424242,)`` and ``foreign_ids = FOREIGN_TO_INT_KEYS``."""

    foreign_ids: tuple[object, ...] = ()
    """Ids of a type the store's keys cannot hold (none, by default: a store holds every type)."""

    race_rounds: int = 12
    """How many times the race tests run their race."""

    # -- the store's hooks --------------------------------------------------------------------

    def make_store(self) -> BroadcastStore:
        """Set-up hook: a fresh, empty store (tables created) for one test; a test may ask for several."""
        raise NotImplementedError("implement make_store() on your StoreContract subclass")

    def release_store(self, store: BroadcastStore) -> None:
        """Tear-down hook: release what :meth:`make_store` acquired (connections, files). Called once
        for every store a test made, after the test, passed or failed. The default calls the store's
        ``close()`` when it has one."""
        close = getattr(store, "close", None)
        if callable(close):
            close()

    # -- what pytest (or run_contract) calls around each test -----------------------------------

    def setup_method(self, method: object = None) -> None:
        """Start a test with no store made."""
        self._stores: list[BroadcastStore] = []

    def teardown_method(self, method: object = None) -> None:
        """Release every store the test made, newest first."""
        stores, self._stores = getattr(self, "_stores", []), []
        for store in reversed(stores):
            self.release_store(store)

    # -- helpers ----------------------------------------------------------------------------------

    def new_store(self) -> BroadcastStore:
        """A store from :meth:`make_store`, released after the test."""
        if not hasattr(self, "_stores"):
            self.setup_method()
        store = self.make_store()
        self._stores.append(store)
        return store

    def _create_explicit(self, lc: BroadcastLifecycle, customer: str, entity_id: EntityId,
                         **options: Any) -> CommandResult:
        """Create a booking with the explicit ``entity_id``; a store that refuses the id's type is told
        to declare what its keys hold."""
        try:
            return lc.kind("booking").create(customer, entity_id=entity_id, **options)
        except InvalidArgument as exc:
            raise AssertionError(
                f"the store refused the {type(entity_id).__name__} id {entity_id!r} ({exc}); if its keys cannot "
                "hold that type, declare explicit_ids and foreign_ids on the contract class "
                "(see docs/adapters.md, Ids)") from exc

    def _lifecycle(self, store: BroadcastStore | None = None, *, listening: bool = True,
                   ) -> tuple[BroadcastLifecycle, EventRecorder, Clock]:
        """A lifecycle on ``store`` (a new one by default) with the contract's kinds and clock, and a
        recorder connected to its bus (``listening=False``: no receiver, every event stays pending)."""
        clock = Clock()
        lc = BroadcastLifecycle(store if store is not None else self.new_store(), clock=clock, kinds=KINDS)
        recorder = EventRecorder()
        if listening:
            lc.bus.connect(recorder)
        return lc, recorder, clock

    def _active(self, lc: BroadcastLifecycle, slots: int = 2, customer: str = "c1",
                transporters: tuple[str, ...] = ("t1", "t2", "t3"), kind: str = "booking") -> EntityId:
        """A new broadcast of ``kind``, offered to ``transporters``, active for five minutes."""
        handle = lc.kind(kind)
        entity_id = handle.create(customer, slots=slots).id
        handle.start_broadcast(entity_id, list(transporters))
        handle.activate(entity_id, ttl=timedelta(minutes=5))
        return entity_id


def without_id(event: BroadcastEvent) -> tuple[str, ...]:
    """The event's fields but its id, as sortable text (times as UTC instants): events two stores
    wrote for the same transition compare equal."""
    return tuple(_text(value) for name, value in dataclasses.asdict(event).items() if name != "event_id")


def _text(value: object) -> str:
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else repr(value)


def race(*actions: Callable[[], object]) -> list[BaseException]:
    """Run ``actions`` in threads released together by a barrier; returns what they raised."""
    barrier = threading.Barrier(len(actions), timeout=WAIT)
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            barrier.wait()
            action()
        except BaseException as exc:  # reported to the test, which decides what is expected
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"a racing thread did not finish within {WAIT * 2:.0f} s")
    return errors


def run_contract(case_class: type[ContractBase], only: tuple[str, ...] = ()) -> dict[str, BaseException]:
    """Run every ``test_*`` method of ``case_class`` (or those named in ``only``) without pytest, each
    on a new instance between its set-up and tear-down; returns the failures by test name (empty:
    the store passed). For stores whose ``make_store`` needs no pytest fixture."""
    failures: dict[str, BaseException] = {}
    names = sorted(name for name in dir(case_class) if name.startswith("test_") and (not only or name in only))
    for name in names:
        case = case_class()
        case.setup_method(getattr(case, name))
        try:
            getattr(case, name)()
        except unittest.SkipTest as skipped:  # not for this store (an optional capability it does not offer)
            logger.info("%s.%s skipped: %s", case_class.__name__, name, skipped)
        except Exception as exc:  # a failed test: recorded, the others still run
            failures[name] = exc
        finally:
            case.teardown_method(getattr(case, name))
    return failures

