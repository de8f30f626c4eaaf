"""The store contract, ids: an id comes back as it was given, of the same type, from every read
(snapshots, history rows, events in the outbox and from the sweeper, idempotency records); the int
777 and the string "777" are two broadcasts."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from .contract_base import T0, ContractBase
from .records import EntityId

__all__ = ["IdsContract"]


def _same(got: object, given: EntityId) -> bool:
    return type(got) is type(given) and got == given


class IdsContract(ContractBase):
    """Ids of every type the store holds (``explicit_ids``), and the ids it picks itself."""

    def test_ids_come_back_as_given(self) -> None:
        """Each explicit id comes back of its type and value from create, get, history, the outbox,
        the sweeper's events and an idempotent replay."""
        lc, _, _ = self._lifecycle(listening=False)
        bookings = lc.kind("booking")
        given = self.explicit_ids
        for n, entity_id in enumerate(given):
            created = self._create_explicit(lc, f"c{n}", entity_id, slots=2, idempotency_key=f"create-{n}")
            assert _same(created.id, entity_id), f"create({entity_id!r}) returned id {created.id!r}"
            bookings.start_broadcast(entity_id, ["t1"])
            bookings.activate(entity_id, ttl=timedelta(minutes=5))
            bookings.accept(entity_id, "t1", idempotency_key=f"accept-{n}")
            replay = bookings.accept(entity_id, "t1", idempotency_key=f"accept-{n}")
            reads = {"get": bookings.get(entity_id).id, "replayed accept": replay.id,
                     "replayed create": bookings.create(f"c{n}", slots=2, entity_id=entity_id,
                                                        idempotency_key=f"create-{n}").id,
                     **{f"history row {h.version}": h.entity_id for h in bookings.history(entity_id)}}
            wrong = {what: got for what, got in reads.items() if not _same(got, entity_id)}
            assert not wrong, f"id {entity_id!r} ({type(entity_id).__name__}) came back as {wrong}"
        batch = lc.store.expire_overdue(bookings.config, T0 + timedelta(minutes=6), 100, "system")
        assert batch.count == len(given)
        events = [*batch.load_events(), *(p.event for p in lc.store.pending_events(10_000))]
        typed = {(type(i), i) for i in given}
        strays = sorted({f"{e.entity_id!r} ({type(e.entity_id).__name__}) in {e.name}" for e in events
                         if (type(e.entity_id), e.entity_id) not in typed})
        assert not strays, f"events carry ids that were never given: {strays}"

    def test_an_int_and_a_digit_string_are_two_ids(self) -> None:
        """When the store holds ints and strings, 777 and "777" are two broadcasts, each found by its own id."""
        types = {type(i) for i in self.explicit_ids}
        if not {int, str} <= types:
            return  # the store holds one of the two types only: its keys cannot confuse them
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        self._create_explicit(lc, "c-int", 777)
        self._create_explicit(lc, "c-str", "777")
        assert bookings.get(777).customer_id == "c-int" and _same(bookings.get(777).id, 777)
        assert bookings.get("777").customer_id == "c-str" and _same(bookings.get("777").id, "777")

    def test_ids_the_store_picks_keep_their_type(self) -> None:
        """An id the store picks is an int, a string or a UUID, and reads give it back of the same type."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        picked = [bookings.create(f"c{n}").id for n in range(3)]
        assert len(set(picked)) == 3, f"the store picked the same id twice: {picked}"
        for entity_id in picked:
            assert isinstance(entity_id, (int, str, UUID)), f"the store picked {entity_id!r}, not an int, str or UUID"
            assert _same(bookings.get(entity_id).id, entity_id)
            assert all(_same(h.entity_id, entity_id) for h in bookings.history(entity_id))
