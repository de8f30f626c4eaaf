from datetime import timedelta

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, TransitionRefused

lifecycle = BroadcastLifecycle()  # in-memory store, UTC clock


def show(event: BroadcastEvent) -> None:
    to = ", ".join(f"{r.role}:{r.id}" for r in event.recipients)
    print(f"{event.name} to [{to}] {event.payload()}")


lifecycle.bus.connect(show)  # every event; pass event_name= or kind= to filter

booking = lifecycle.create("booking", customer_id="c-1", slots=2, actor="c-1")
lifecycle.start_broadcast("booking", booking.id, ["t-1", "t-2", "t-3"])
lifecycle.activate("booking", booking.id, ttl=timedelta(minutes=5))
lifecycle.accept("booking", booking.id, "t-1")
print(lifecycle.accept("booking", booking.id, "t-2").status)  # fully_filled
try:
    lifecycle.accept("booking", booking.id, "t-3")
except TransitionRefused as refused:
    print("refused:", refused.reason)
for entry in lifecycle.history("booking", booking.id):
    print(f"v{entry.version} {entry.from_status} -> {entry.to_status} ({entry.trigger}, actor {entry.actor})")
