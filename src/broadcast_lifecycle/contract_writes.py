"""The store contract, writes: a store has every protocol method; a compare-and-set that loses writes
nothing anywhere; history rows, times and recipients come back exactly as written, in their order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

from .contract_base import T0, ContractBase
from .decision import decide
from .errors import InvalidArgument
from .guards import CommandContext
from .lifecycle import Trigger
from .records import HistoryEntry
from .states import BroadcastStatus
from .stores.base import BroadcastStore, Change, Committed, missing_store_methods

__all__ = ["WritesContract"]

_METADATA: dict[str, Any] = {"refund": True, "amount": 12.5, "lines": [1, 2, {"sku": "x"}], "note": None,
                             "city": "Zürich"}


class WritesContract(ContractBase):
    """Writes and what reading them back gives."""

    def test_store_has_every_protocol_method(self) -> None:
        """The store is a BroadcastStore: it has every method of the protocol."""
        store = self.new_store()
        assert missing_store_methods(store) == [], f"missing {missing_store_methods(store)}"
        assert isinstance(store, BroadcastStore)

    def test_lost_race_writes_nothing_anywhere(self) -> None:
        """A change decided on a stale version returns None and writes no state, history, holding,
        recipient, outbox row (no event, no offer) or idempotency key, and calls nobody."""
        lc, _, clock = self._lifecycle(listening=False)
        bookings = lc.kind("booking")
        store = lc.store
        entity_id = self._active(lc)
        waiting = bookings.create("c2").id
        stale = store.load("booking", entity_id, "t1").snapshot
        stale_created = store.load("booking", waiting).snapshot
        bookings.accept(entity_id, "t2")
        bookings.start_broadcast(waiting, ["t1"])
        clock.advance(timedelta(seconds=1))
        now, config = clock.now, bookings.config

        def state() -> list[object]:
            return [*(x for i in (entity_id, waiting) for x in (store.load("booking", i).snapshot,
                                                                 store.history("booking", i),
                                                                 store.recipients("booking", i))),
                    _pending_ids(store)]

        before, calls = state(), list[Committed]()
        changes = (
            Change(config, stale, decide(stale, Trigger.ACCEPT, CommandContext(now, 1, "t1", 0)), now, "t1",
                   transporter_id="t1", idempotency_key="lost-accept"),
            Change(config, stale, decide(stale, Trigger.CANCEL, CommandContext(now)), now, "c1", "lost",
                   {"why": "race"}, idempotency_key="lost-cancel"),
            Change(config, stale_created, decide(stale_created, Trigger.START_BROADCAST, CommandContext(now)), now,
                   "c2", recipients=("t8", "t9"), idempotency_key="lost-start"),
        )
        for change in changes:
            assert store.apply(change, calls.append) is None, f"a stale {change.decision.trigger} was applied"
        for what, was, now_is in zip(("snapshot", "history", "recipients") * 2 + ("outbox",), before, state(),
                                     strict=True):
            assert now_is == was, f"a lost compare-and-set changed the {what}: {was} -> {now_is}"
        assert calls == [], "after_commit was called for a write that lost its compare-and-set"
        assert [store.recall(f"lost-{what}") for what in ("accept", "cancel", "start")] == [None] * 3

    def test_a_transaction_the_store_cannot_join_is_refused(self) -> None:
        """A ``tx`` that is not the store's kind of transaction handle is InvalidArgument naming ``tx``,
        on every command and query, and nothing is written."""
        lc, _, _ = self._lifecycle(listening=False)
        bookings = lc.kind("booking")
        entity_id = self._active(lc)
        before = (bookings.get(entity_id), bookings.history(entity_id), _pending_ids(lc.store))
        foreign: Any = object()  # what the signatures forbid, on purpose
        calls: dict[str, Callable[[], object]] = {
            "create": lambda: bookings.create("c9", tx=foreign),
            "notify_more": lambda: bookings.notify_more(entity_id, ["t9"], tx=foreign),
            "accept": lambda: bookings.accept(entity_id, "t1", tx=foreign),
            "cancel": lambda: bookings.cancel(entity_id, tx=foreign),
            "get": lambda: bookings.get(entity_id, tx=foreign),
            "history": lambda: bookings.history(entity_id, tx=foreign),
            "recipients": lambda: bookings.recipients(entity_id, tx=foreign),
        }
        wrong = []
        for name, call in calls.items():
            try:
                call()
            except InvalidArgument as exc:
                if "tx" not in str(exc):
                    wrong.append(f"{name}: the message {str(exc)!r} does not name tx")
            else:
                wrong.append(f"{name} with tx={foreign!r} was accepted")
        assert not wrong, "\n".join(wrong)
        assert (bookings.get(entity_id), bookings.history(entity_id), _pending_ids(lc.store)) == before

    def test_history_keeps_every_field(self) -> None:
        """History rows come back in version order with every field as written: trigger, actor,
        reason, time, version and JSON metadata (nested, unicode, null) unchanged."""
        lc, _, clock = self._lifecycle()
        bookings = lc.kind("booking")
        created = bookings.create("c1", actor="c1-admin", reason="new trip", metadata={"source": "app"}).snapshot
        clock.advance(timedelta(seconds=1))
        bookings.start_broadcast(created.id, ["t1"], actor="dispatcher", metadata={"radius_km": 5})
        clock.advance(timedelta(seconds=1))
        bookings.cancel(created.id, actor="c1", reason="changed plans", metadata=_METADATA)
        history = bookings.history(created.id)
        s = BroadcastStatus
        expected = (
            HistoryEntry("booking", created.id, None, s.CREATED, "create", "c1-admin", "new trip", T0, 1,
                         {"source": "app"}),
            HistoryEntry("booking", created.id, s.CREATED, s.BROADCASTING, "start_broadcast", "dispatcher", None,
                         T0 + timedelta(seconds=1), 2, {"radius_km": 5}),
            HistoryEntry("booking", created.id, s.BROADCASTING, s.CANCELLED, "cancel", "c1", "changed plans",
                         T0 + timedelta(seconds=2), 3, _METADATA),
        )
        for n, (got, want) in enumerate(zip(history, expected, strict=False)):
            assert got == want, f"history row {n + 1} differs:\n  written: {want}\n  read:    {got}"
        assert len(history) == len(expected)

    def test_times_come_back_to_the_microsecond(self) -> None:
        """Times written from a clock in any zone come back as the same instant, to the microsecond,
        and timezone-aware: snapshots, history rows, recipients, outbox entries and events."""
        lc, _, clock = self._lifecycle(listening=False)
        clock.now = (T0 + timedelta(microseconds=123457)).astimezone(timezone(timedelta(hours=5, minutes=30)))
        at = clock.now
        deadline = at + timedelta(hours=1, microseconds=1)
        bookings = lc.kind("booking")
        created = bookings.create("c1", expires_at=deadline).snapshot
        bookings.start_broadcast(created.id, ["t1"])
        snapshot = bookings.get(created.id)
        pending = lc.store.pending_events(100)
        times = {
            "state_changed_at": snapshot.state_changed_at, "created_at": snapshot.created_at,
            "history at": bookings.history(created.id)[-1].at,
            "notified_at": bookings.recipients(created.id)[0].notified_at,
            **{f"outbox created_at of {p.event.name}": p.created_at for p in pending},
            **{f"state_changed_at of {p.event.name}": p.event.state_changed_at for p in pending
               if p.event.version == 2},
        }
        for what, value in times.items():
            assert value.tzinfo is not None and value.utcoffset() is not None, f"{what} came back naive: {value!r}"
            assert value == at, f"{what} is {value.isoformat()}, written as {at.isoformat()}"
        assert snapshot.expires_at == deadline, f"expires_at is {snapshot.expires_at}, written as {deadline}"

    def test_recipients_in_notification_order(self) -> None:
        """Recipients list in notification order, ties by transporter id; a transporter notified again
        keeps its first notification time and holding; terminal events address them in that order."""
        lc, recorder, clock = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = bookings.create("c1", slots=3).id
        bookings.start_broadcast(entity_id, ["t3", "t1", "t2"])
        bookings.activate(entity_id, ttl=timedelta(minutes=5))
        bookings.accept(entity_id, "t2")
        clock.advance(timedelta(seconds=1))
        bookings.notify_more(entity_id, ["t0", "t2"])
        clock.advance(timedelta(seconds=1))
        bookings.notify_more(entity_id, ["a9"])
        listed = [(r.transporter_id, r.notified_at, r.slots_held) for r in bookings.recipients(entity_id)]
        second = T0 + timedelta(seconds=1)
        assert listed == [("t1", T0, 0), ("t2", T0, 1), ("t3", T0, 0), ("t0", second, 0),
                          ("a9", second + timedelta(seconds=1), 0)], f"recipients listed as {listed}"
        bookings.cancel(entity_id)
        (cancelled,) = [e for e in recorder.events if e.name == "BOOKING_CANCELLED"]
        assert [r.id for r in cancelled.recipients] == ["c1", "t1", "t2", "t3", "t0", "a9"]


def _pending_ids(store: BroadcastStore) -> list[str]:
    return sorted(entry.event.event_id for entry in store.pending_events(10_000))
