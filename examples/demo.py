"""A scripted broadcast lifecycle on a manual clock (``make demo``).

Three bookings share one lifecycle (in-memory store) and one clock that moves only when the script
says so, so the output is the same on every run (event ids aside):

* booking A: 2 slots, 3 transporters; two accepts fill it, the trip starts and completes;
* booking B: 1 of 2 slots accepted, then the customer cancels;
* booking C: activated with a 5-minute ttl; 6 minutes later ``expire_due()`` expires it;
* and refused commands: an accept by a transporter B never notified, an accept on expired C.

It prints one line per transition (and per refusal), then the events each user received.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Literal

from broadcast_lifecycle import BroadcastLifecycle, TransitionRefused
from broadcast_lifecycle.testing import EventRecorder

KIND = "booking"
START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
STEP = timedelta(seconds=30)
TTL = timedelta(minutes=15)
CUSTOMERS = {"A": "alice", "B": "bob", "C": "carol"}
TRANSPORTERS = {"A": ["T1", "T2", "T3"], "B": ["T2", "T3", "T4"], "C": ["T1", "T4"]}


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.now += delta


def hms(at: datetime) -> str:
    """A time of day for the timeline (the demo runs within one day)."""
    return at.strftime("%H:%M:%S")


def main() -> None:
    """Run the script and print the timeline and what each user received."""
    clock = ManualClock(START)
    lifecycle = BroadcastLifecycle(clock=clock)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)  # every event, of every kind
    notes: list[tuple[datetime, str]] = []  # refusals and sweeps

    def do(command: Callable[[], object], what: str = "") -> None:
        """Advance the clock one step and run ``command``; note a refusal instead of raising."""
        clock.advance(STEP)
        try:
            command()
        except TransitionRefused as refused:
            notes.append((clock(), f"{refused.entity_id}  REFUSED {what}: {refused.reason}"))

    def open_booking(booking: str, slots: int, ttl: timedelta) -> None:
        """Create ``booking``, notify its transporters and open it for acceptances."""
        customer = CUSTOMERS[booking]
        do(lambda: lifecycle.kind(KIND).create(customer, slots=slots, entity_id=booking, actor=customer))
        do(lambda: lifecycle.kind(KIND).start_broadcast(booking, TRANSPORTERS[booking], actor="dispatch"))
        do(lambda: lifecycle.kind(KIND).activate(booking, ttl=ttl, actor="dispatch"))

    # Booking A: filled by two transporters, then driven to completion.
    open_booking("A", 2, TTL)
    do(lambda: lifecycle.kind(KIND).accept("A", "T1"))
    do(lambda: lifecycle.kind(KIND).accept("A", "T2"))
    do(lambda: lifecycle.kind(KIND).start_trip("A", actor="T1"))
    do(lambda: lifecycle.kind(KIND).complete("A", actor="T1"))

    # Booking B: one accept, a transporter who was never notified tries, the customer cancels.
    open_booking("B", 2, TTL)
    do(lambda: lifecycle.kind(KIND).accept("B", "T3"))
    do(lambda: lifecycle.kind(KIND).accept("B", "T9"), "accept by T9")
    do(lambda: lifecycle.kind(KIND).cancel("B", actor="bob", reason="found another carrier"))

    # Booking C: nobody accepts within 5 minutes; the sweeper expires it, a late accept is refused.
    open_booking("C", 1, timedelta(minutes=5))
    clock.advance(timedelta(minutes=6))
    swept = lifecycle.expire_due()
    notes.append((clock(), f"C  expire_due() expired {swept} booking(s)"))
    do(lambda: lifecycle.kind(KIND).accept("C", "T4"), "accept by T4")

    print("== timeline: one line per transition (and per refused command) ==")
    lines: list[tuple[datetime, str]] = []
    for booking in CUSTOMERS:
        for entry in lifecycle.kind(KIND).history(booking):
            source = entry.from_status.value if entry.from_status else "(new)"
            text = f"{source:>16} -> {entry.to_status.value:<16}  {entry.trigger:<15}  by {entry.actor}"
            lines.append((entry.at, f"{booking}  {text}"))
    lines += notes  # after the transitions, so a transition comes first when the times are equal
    for at, text in sorted(lines, key=lambda line: line[0]):
        print(f"{hms(at)}  {text}")

    print()
    print("== events received, per user, in order ==")
    users: list[tuple[Literal["customer", "transporter"], str]] = [("customer", c) for c in CUSTOMERS.values()]
    users += [("transporter", t) for t in sorted({t for ts in TRANSPORTERS.values() for t in ts})]
    for role, user in users:
        print(f"{role} {user}")
        for event in recorder.for_recipient(role, user):
            print(f"  {hms(event.state_changed_at)}  {event.entity_id}  {event.name:<24}"
                  f"  {event.status.value:<16}  v{event.version}")

    print()
    last = recorder.events[-1].addressed()[-1]
    print(f"the last event ({last.payload['event']}) as a socket layer sends it to {last.recipient.id}:")
    print(json.dumps(last.payload, indent=2))


if __name__ == "__main__":
    main()
