"""What the operator commands show: one broadcast's timeline, and the outbox by delivery state,
as aligned text for people and JSON-ready dicts for scripts.

An event's delivery is rendered by :func:`delivery_json` / :func:`_delivery_text` from the
:class:`~broadcast_lifecycle.stores.base.OutboxEntry` the store returns, with the state of each named
receiver once one failed on it (which receiver, which error, how many attempts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .records import BroadcastSnapshot, HistoryEntry, RecipientRecord
from .stores.base import BroadcastStore, InspectsOutbox, OutboxBucket, OutboxEntry
from .stores.outbox_state import ReceiverDelivery

__all__ = ["OUTBOX_STATES", "Timeline", "age", "delivery_json", "outbox_summary", "summary_json", "summary_text",
           "timeline_json", "timeline_text"]

OUTBOX_STATES = ("pending", "retrying", "dead")
"""Undelivered outbox states: never tried yet, failed and waiting for a retry, out of attempts."""

_SCAN_LIMIT = 1_000_000_000  # stores without InspectsOutbox: read everything


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """A broadcast as committed, its history, its recipients and its events (``None``: the store keeps
    no event log)."""

    snapshot: BroadcastSnapshot
    history: tuple[HistoryEntry, ...]
    recipients: tuple[RecipientRecord, ...]
    events: tuple[OutboxEntry, ...] | None


def outbox_summary(store: BroadcastStore) -> dict[str, OutboxBucket]:
    """Every undelivered state of :data:`OUTBOX_STATES` with its count and oldest entry."""
    if isinstance(store, InspectsOutbox):
        found = store.outbox_summary()
    else:
        pending = store.pending_events(_SCAN_LIMIT)
        live = {e.event.event_id for e in pending}
        created = {state: [e.created_at for e in pending if e.state == state] for state in ("pending", "retrying")}
        # a dead event: settled with a dead letter, no longer pending for any other receiver
        created["dead"] = list({letter.event.event_id: letter.created_at for letter in store.dead_letters(_SCAN_LIMIT)
                                if letter.event.event_id not in live}.values())
        found = {state: OutboxBucket(len(times), min(times, default=None)) for state, times in created.items()}
    return {state: found.get(state, OutboxBucket()) for state in OUTBOX_STATES}


def age(delta: timedelta) -> str:
    """``delta`` in its two largest units: ``3d 4h``, ``5m 2s``, ``0s``."""
    seconds = max(0, int(delta.total_seconds()))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def summary_json(summary: dict[str, OutboxBucket], now: datetime) -> dict[str, Any]:
    """``{state: {"count", "oldest", "oldest_age_seconds"}}`` for each undelivered state."""
    return {state: {"count": bucket.count, "oldest": _iso(bucket.oldest),
                    "oldest_age_seconds": (now - bucket.oldest).total_seconds() if bucket.oldest else None}
            for state, bucket in summary.items()}


def summary_text(summary: dict[str, OutboxBucket], now: datetime) -> str:
    """One aligned row per undelivered state: count, and the oldest entry with its age."""
    rows = [["outbox", "count", "oldest"]]
    for state, bucket in summary.items():
        oldest = f"{bucket.oldest.isoformat()} ({age(now - bucket.oldest)} ago)" if bucket.oldest else "-"
        rows.append([state, str(bucket.count), oldest])
    return _table(rows, right={1}) + "\n"


def delivery_json(entry: OutboxEntry) -> dict[str, Any]:
    """An event's delivery state as JSON-ready values."""
    return {"state": entry.state, "attempts": entry.attempts, "delivered_at": _iso(entry.delivered_at),
            "next_attempt_at": _iso(entry.next_attempt_at), "dead_at": _iso(entry.dead_at),
            "last_error": entry.last_error,
            "receivers": [{"receiver": r.receiver, "state": _receiver_state(r), "attempts": r.attempts,
                           "last_error": r.last_error, "next_attempt_at": _iso(r.next_attempt_at),
                           "delivered_at": _iso(r.delivered_at), "dead_at": _iso(r.dead_at)}
                          for r in entry.receivers]}


def _receiver_state(state: ReceiverDelivery) -> str:
    if state.delivered_at is not None:
        return "delivered"
    return "dead" if state.dead_at is not None else "retrying"


def _receiver_text(state: ReceiverDelivery) -> str:
    """``sockets dead after 3 attempts: ConnectionError: ...`` / ``analytics delivered``."""
    text = f"{state.receiver} {_receiver_state(state)}"
    if state.delivered_at is None:
        text += f" after {state.attempts} attempt{'s' if state.attempts != 1 else ''}"
        if state.last_error:
            text += f": {state.last_error}"
    return text


def _delivery_text(entry: OutboxEntry) -> str:
    if entry.delivered_at is not None:
        text = f"delivered {entry.delivered_at.isoformat()}"
    else:
        text = entry.state
        if entry.attempts:
            text += f" after {entry.attempts} attempt{'s' if entry.attempts > 1 else ''}"
        if entry.dead_at is not None:
            text += f" at {entry.dead_at.isoformat()}"
        elif entry.next_attempt_at is not None:
            text += f", next {entry.next_attempt_at.isoformat()}"
    if entry.receivers:  # once a receiver failed: each named receiver's own state and error
        return f"{text}: {'; '.join(map(_receiver_text, entry.receivers))}"
    if entry.last_error and entry.delivered_at is None:
        text += f": {entry.last_error}"
    return text


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    """The timeline as JSON-ready values (camelCase snapshot as in event payloads, snake_case elsewhere)."""
    s = timeline.snapshot
    return {
        "kind": s.kind, "id": str(s.id), "broadcast": s.to_json(),
        "history": [{"version": h.version, "at": h.at.isoformat(), "from": h.from_status.value if h.from_status
                     else None, "to": h.to_status.value, "trigger": h.trigger, "actor": h.actor, "reason": h.reason,
                     "metadata": h.metadata} for h in timeline.history],
        "recipients": [{"transporter_id": r.transporter_id, "notified_at": r.notified_at.isoformat(),
                        "slots_held": r.slots_held, "response": r.response} for r in timeline.recipients],
        "events": None if timeline.events is None else [
            {"event_id": e.event.event_id, "name": e.event.name, "topic": e.event.topic.value,
             "version": e.event.version, "status": e.event.status.value, "created_at": e.created_at.isoformat(),
             "recipients": [f"{r.role}:{r.id}" for r in e.event.recipients], "delivery": delivery_json(e)}
            for e in timeline.events],
    }


def timeline_text(timeline: Timeline) -> str:
    """The timeline for people: the broadcast, then its history, recipients and events as aligned tables."""
    s = timeline.snapshot
    lines = [
        f"{s.kind} {s.id}: {s.status.value}, version {s.version}, {s.slots_filled} of {s.slots_requested} slots "
        f"filled, customer {s.customer_id}",
        f"created {s.created_at.isoformat()}, state changed {s.state_changed_at.isoformat()}, "
        f"expires {_iso(s.expires_at) or '-'}",
        "", "history",
        _table([["v", "at", "transition", "trigger", "actor", "reason"]] + [
            [str(h.version), h.at.isoformat(), f"{h.from_status.value if h.from_status else '-'} -> "
             f"{h.to_status.value}", h.trigger, h.actor or "-", h.reason or ""] for h in timeline.history],
            right={0}, indent=2),
        "", "recipients",
        _table([["transporter", "notified", "holds", "response"]] + [
            [r.transporter_id, r.notified_at.isoformat(), str(r.slots_held), r.response or "-"]
            for r in timeline.recipients], right={2}, indent=2) if timeline.recipients else "  (none)",
        "", "events",
    ]
    if timeline.events is None:
        lines.append("  (this store keeps no event log)")
    elif not timeline.events:
        lines.append("  (none)")
    else:
        lines.append(_table([["created", "event", "v", "to", "delivery"]] + [
            [e.created_at.isoformat(), e.event.name, str(e.event.version),
             ", ".join(f"{r.role}:{r.id}" for r in e.event.recipients), _delivery_text(e)]
            for e in timeline.events], right={2}, indent=2))
    return "\n".join(lines) + "\n"


def _table(rows: Sequence[Sequence[str]], *, right: frozenset[int] | set[int] = frozenset(), indent: int = 0) -> str:
    """``rows`` (the first is the header) as columns padded to their widest cell; ``right`` aligns right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if i in right else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append(" " * indent + "  ".join(cells).rstrip())
    return "\n".join(lines)
