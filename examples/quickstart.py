from datetime import timedelta

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, TransitionRefused

lifecycle = BroadcastLifecycle()  # in-memory store, UTC clock
bookings = lifecycle.kind("booking")  # resolve a kind once; an unknown kind fails here


def show(event: BroadcastEvent) -> None:
    for copy in event.addressed():  # one payload per recipient, as a socket layer sends them
        to, p = copy.recipient, copy.payload
        print(f"{p['event']} to {to.role}:{to.id}: {p['status']} v{p['version']} ({p['trigger']})")


lifecycle.bus.connect(show)  # every event; pass event_name= or kind= to filter

booking = bookings.create("c-1", slots=2)  # the actor defaults to the customer
bookings.start_broadcast(booking.id, ["t-1", "t-2", "t-3"], actor="dispatcher")
bookings.activate(booking.id, ttl=timedelta(minutes=5), actor="dispatcher")
bookings.accept(booking.id, "t-1")
print(bookings.accept(booking.id, "t-2", slots=1).status)  # fully_filled
try:
    bookings.accept(booking.id, "t-3")
except TransitionRefused as refused:
    print("refused:", refused.reason)
for entry in bookings.history(booking.id):
    print(f"v{entry.version} {entry.from_status} -> {entry.to_status} ({entry.trigger}, actor {entry.actor})")
