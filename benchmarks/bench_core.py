"""The core's cost: one ``decide()`` against a dict lookup and a bare ``transitions`` trigger, and the
memory one tracked broadcast takes on the in-memory store.

Run it through ``benchmarks/run.py`` (``make bench``) or on its own: ``python benchmarks/bench_core.py``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import timeit
import tracemalloc
from datetime import datetime, timedelta, timezone

from transitions import Machine

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandContext,
    InMemoryStore,
    Trigger,
)
from broadcast_lifecycle.decision import decide
from broadcast_lifecycle.lifecycle import MACHINE, ROUTES, build_machine

__all__ = ["main"]

TARGET_US = 3.0
"""The budget for one decision, in microseconds."""
BROADCASTS = 20_000
RECIPIENTS = 3
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def best_us(stmt: str, namespace: dict[str, object]) -> float:
    """Microseconds per run of ``stmt``: best of 5 repeats, each at least 0.2 s long."""
    timer = timeit.Timer(stmt, globals=namespace)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def _accept_case() -> dict[str, object]:
    """``accept`` of one slot on a partially filled broadcast (1 of 3), by a notified transporter."""
    snapshot = BroadcastSnapshot(
        kind="booking", id=1, customer_id="customer-1", status=BroadcastStatus.PARTIALLY_FILLED,
        slots_requested=3, slots_filled=1, version=4, state_changed_at=NOW, created_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
    )
    ctx = CommandContext(NOW, slots=1, transporter_id="transporter-2", holding=0)
    assert decide(snapshot, Trigger.ACCEPT, ctx).to_status is BroadcastStatus.PARTIALLY_FILLED
    return {"decide": decide, "snapshot": snapshot, "trigger": Trigger.ACCEPT, "ctx": ctx}


class _Model:
    """A bare model for the comparison machine: every guard passes, no slot fills the broadcast."""

    state: str

    def transporter_notified(self) -> bool:
        return True

    def slots_available(self) -> bool:
        return True

    def fills_all(self) -> bool:
        return False


def _transitions_trigger_us() -> float:
    """Microseconds per ``model.accept()`` on the library's table, partially_filled -> partially_filled."""
    machine = build_machine()
    model = _Model()
    machine.add_model(model, initial=BroadcastStatus.PARTIALLY_FILLED.value)
    try:
        return best_us("model.accept()", {"model": model})
    finally:
        machine.remove_model(model)


def _service_against_trigger() -> tuple[float, float]:
    """Microseconds per command through the service on ``InMemoryStore`` (no receivers: accept and
    release of one slot alternately, active <-> partially_filled) and per bare ``transitions``
    trigger (:func:`_transitions_trigger_us`'s), timed in turns (the best of 40 short turns each, about
    25 ms a turn), so that a slow moment of the shared machine does not fall on one side only."""
    lifecycle = BroadcastLifecycle(InMemoryStore())
    bookings = lifecycle.kind("booking")
    entity_id = bookings.create("customer-1", slots=1_000_000).id
    bookings.start_broadcast(entity_id, ["transporter-1"])
    bookings.activate(entity_id, ttl=timedelta(days=1))
    service = timeit.Timer("accept(entity_id, 'transporter-1'); release(entity_id, 'transporter-1')",
                           globals={"accept": bookings.accept, "release": bookings.release, "entity_id": entity_id})
    machine = build_machine()
    model = _Model()
    machine.add_model(model, initial=BroadcastStatus.PARTIALLY_FILLED.value)
    trigger = timeit.Timer("model.accept()", globals={"model": model})
    service_n, trigger_n = max(1, service.autorange()[0] // 8), max(1, trigger.autorange()[0] // 8)
    best = [float("inf"), float("inf")]
    for _ in range(40):
        best[0] = min(best[0], service.timeit(service_n) / service_n / 2 * 1e6)
        best[1] = min(best[1], trigger.timeit(trigger_n) / trigger_n * 1e6)
    machine.remove_model(model)
    return best[0], best[1]


def _profile_decide(case: dict[str, object]) -> str:
    """The functions a slow ``decide()`` spends its time in, by own time."""
    profiler = cProfile.Profile()
    profiler.runctx("for _ in range(100_000): decide(snapshot, trigger, ctx)", case, {})
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def _memory_per_broadcast(count: int) -> tuple[float, int, list[Machine]]:
    """Bytes per broadcast (created, broadcast to ``RECIPIENTS``, activated), events delivered, and the
    ``transitions.Machine`` objects alive while the broadcasts are tracked."""
    transporters = [f"transporter-{i}" for i in range(1_000)]
    customers = [f"customer-{i}" for i in range(count)]
    delivered: list[int] = [0]

    def receiver(event: BroadcastEvent) -> None:
        delivered[0] += 1

    lifecycle = BroadcastLifecycle(InMemoryStore())  # the real UTC clock: a new datetime per stamp
    lifecycle.bus.connect(receiver)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, customer in enumerate(customers):
        booking = lifecycle.kind("booking").create(customer, slots=RECIPIENTS)
        notified = [transporters[(i + k) % len(transporters)] for k in range(RECIPIENTS)]
        lifecycle.kind("booking").start_broadcast(booking.id, notified)
        lifecycle.kind("booking").activate(booking.id, ttl=timedelta(minutes=10))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert not lifecycle.store.pending_events(limit=1), "every event should have been delivered"
    return used / count, delivered[0], [o for o in gc.get_objects() if isinstance(o, Machine)]


def main() -> None:
    """Print the decision cost against its budget and peers, and the memory per broadcast."""
    case = _accept_case()
    decide_us = best_us("decide(snapshot, trigger, ctx)", case)
    table = dict(ROUTES)
    lookup_us = best_us("table[(trigger, state)]", {
        "table": table, "trigger": Trigger.ACCEPT, "state": BroadcastStatus.PARTIALLY_FILLED})
    machine_us = _transitions_trigger_us()
    verdict = "OK" if decide_us <= TARGET_US else "OVER BUDGET"
    print(f"decide() accept on partially_filled   {decide_us:8.3f} µs   (target <= {TARGET_US:g} µs: {verdict})")
    print(f"dict lookup table[(trigger, state)]   {lookup_us:8.3f} µs")
    print(f"decide() / dict lookup                {decide_us / lookup_us:8.1f} x")
    print(f"transitions model.accept() (bare)     {machine_us:8.3f} µs   ({machine_us / decide_us:.1f} x decide())")
    service_us, trigger_us = _service_against_trigger()
    ratio = service_us / trigger_us
    print(f"service command on InMemoryStore      {service_us:8.3f} µs   ({ratio:.2f} x a bare trigger timed in turns "
          f"with it, {trigger_us:.3f} µs; target <= 1.5 x: {'OK' if ratio <= 1.5 else 'OVER TARGET'})")
    if decide_us > TARGET_US:
        print(_profile_decide(case))
    gc.collect()
    per_broadcast, delivered, machines = _memory_per_broadcast(BROADCASTS)
    print(f"memory per tracked broadcast          {per_broadcast:8.0f} B    "
          f"({BROADCASTS:,} broadcasts, {RECIPIENTS} recipients each, activated; {delivered:,} events delivered)")
    ok = "OK: no per-broadcast machine" if machines == [MACHINE] else "FAIL: expected lifecycle.MACHINE only"
    print(f"transitions.Machine instances alive   {len(machines):8d}      ({ok})")


if __name__ == "__main__":
    main()
