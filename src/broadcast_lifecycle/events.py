"""Events announced after a write commits, who receives them, and what each recipient is sent.

Pure data: this module builds frozen event values and their JSON-ready payloads. Sending them is
the bus's job (:mod:`broadcast_lifecycle.bus`).

A :class:`BroadcastEvent` is the envelope the bus, the outbox and the relay carry: the fact plus
its ``recipients``. It is not a wire format. What goes to a client is :meth:`BroadcastEvent.payload`
(the same for every recipient, naming nobody) or, per recipient, :meth:`BroadcastEvent.addressed`.
Never serialise the event itself (``dataclasses.asdict``, orjson, FastAPI's ``jsonable_encoder``
would copy ``recipients``, every notified transporter's id, into what each client receives).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Literal, NamedTuple, TypedDict, cast
from uuid import UUID

from ._quick import quick_constructor
from .records import BroadcastSnapshot, EntityId
from .states import BroadcastStatus

if TYPE_CHECKING:
    from .kinds import KindConfig

__all__ = [
    "NOTIFY_MORE",
    "Addressed",
    "BroadcastEvent",
    "EventPayload",
    "Recipient",
    "Topic",
    "build_event",
    "build_events",
    "build_offer",
    "new_event_id",
]

NOTIFY_MORE = "notify_more"
"""The trigger an offer made by ``notify_more`` carries (it is no transition, so not a ``Trigger``)."""


class Topic(str, Enum):
    """What an event announces; the kind turns it into a wire name. Which transition announces which
    topic is the transition table's to say (``Rule.announces`` in :mod:`broadcast_lifecycle.lifecycle`)."""

    STATE_CHANGED = "state_changed"
    """Every transition, creation included: to the customer."""
    OFFERED = "offered"
    """The broadcast is open for these transporters: to each newly notified one (``start_broadcast``,
    ``notify_more``), and again to every notified one holding no slot when it (re)opens (``activate``
    sets the deadline; a ``release`` frees a slot of a full broadcast)."""
    EXTENDED = "extended"
    """The deadline moved later (``extend``): to the customer and every notified transporter."""
    FULLY_FILLED = "fully_filled"
    CLOSED = "closed"
    """The broadcast stopped taking acceptances without being filled (``start_trip`` from
    ``partially_filled``, for a kind that allows a partial trip): to the customer and every notified
    transporter, so an offer leaves the lists of those holding no slot."""
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class Recipient(NamedTuple):
    """Someone an event is addressed to."""

    role: Literal["customer", "transporter"]
    id: str


class EventPayload(TypedDict):
    """The JSON-ready body of an event, the same for each of its recipients (camelCase, ids as str or
    int, times ISO-8601 UTC).

    Besides these keys the payload carries the kind's id field (``bookingId``, ``orderId``: the kind's
    ``id_field``), equal to ``entityId``. A ``TypedDict`` cannot name a key chosen at run time, so that
    key is not declared here: read ``entityId``, or ``payload[kind.id_field]`` through a ``dict`` view.
    """

    # Unique per event: de-duplicate at-least-once deliveries on it.
    eventId: str
    # The wire name (``BROADCAST_STATE_CHANGED``, ``BOOKING_OFFERED``, ...).
    event: str
    kind: str
    entityId: str | int
    # The broadcast's state after the write.
    status: str
    # The state before the transition (``None`` for the creation; for an offer made by ``notify_more``,
    # which changes no state, the current state).
    previousStatus: str | None
    # When the broadcast entered ``status``.
    stateChangedAt: str
    # The broadcast's version after the write: drop an event older than one already seen.
    version: int
    slotsFilled: int
    slotsRequested: int
    # The deadline for acceptances, if set.
    expiresAt: str | None
    # What caused it: a trigger's name (``accept``, ``cancel``, ``expire``, ...) or ``notify_more``.
    trigger: str
    # The reason given with the command (a cancel's, a release's; an expiry's), if any.
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Addressed:
    """One recipient's copy of an event: whom to send it to, and what."""

    recipient: Recipient
    payload: EventPayload


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastEvent:
    """One event for the socket layer: a name, its recipients and the broadcast's state.

    ``recipients`` is routing data for the bus, the outbox and the relay; it is never part of a
    payload. Send :meth:`addressed` (or :meth:`payload`) to clients, never the event itself.
    """

    event_id: str
    name: str
    topic: Topic
    kind: str
    id_field: str
    entity_id: EntityId
    recipients: tuple[Recipient, ...]
    status: BroadcastStatus
    previous_status: BroadcastStatus | None
    state_changed_at: datetime
    version: int
    slots_filled: int
    slots_requested: int
    expires_at: datetime | None
    trigger: str
    reason: str | None

    def payload(self) -> EventPayload:
        """The JSON-ready body for web clients (see :class:`EventPayload`); it names no recipient."""
        entity_id = str(self.entity_id) if isinstance(self.entity_id, UUID) else self.entity_id
        body = EventPayload(
            eventId=self.event_id,
            event=self.name,
            kind=self.kind,
            entityId=entity_id,
            status=self.status.value,
            previousStatus=self.previous_status.value if self.previous_status else None,
            stateChangedAt=_iso(self.state_changed_at),
            version=self.version,
            slotsFilled=self.slots_filled,
            slotsRequested=self.slots_requested,
            expiresAt=_iso(self.expires_at) if self.expires_at else None,
            trigger=self.trigger,
            reason=self.reason,
        )
        cast("dict[str, object]", body)[self.id_field] = entity_id
        return body

    def addressed(self) -> tuple[Addressed, ...]:
        """Each recipient with its own copy of the payload, in ``recipients`` order: what a socket
        layer emits, one message per recipient (e.g. to a room per user)."""
        body = self.payload()
        return tuple(Addressed(recipient=recipient, payload=body.copy()) for recipient in self.recipients)


_event = quick_constructor(BroadcastEvent)

# Members read on every command, as module constants: on Python 3.10 and 3.11 an Enum class's attribute
# is read through EnumType.__getattr__, some 60 ns a read.
_STATE_CHANGED, _OFFERED = Topic.STATE_CHANGED, Topic.OFFERED
_recipient = tuple.__new__
"""``_recipient(Recipient, (role, id))`` is ``Recipient(role, id)`` without the named tuple's generated ``__new__``
in between (which does exactly this): half the cost, for each recipient of every event."""


def new_event_id() -> str:
    """A new event id: a UUIDv7 (RFC 9562), so ids sort by the millisecond they were made in and an
    outbox's key index grows at its end. After the milliseconds come a per-process counter and 50
    bits drawn once per process (again in a child after ``fork``): unique within a process without
    a draw per id, and across processes but for a 2**-50 chance per pair of processes."""
    ms = time.time_ns() // 1_000_000
    n = next(_ID_COUNTER) & 0xFF_FFFF
    # The text before the counter changes once a millisecond and the text after it once every 4,096 ids:
    # both are kept (each as one tuple, which threads replace whole) rather than formatted for every id.
    stamp = _ID_STAMP[0]
    if stamp[0] != ms:  # about once a command: the low 16 bits from a table, the rest formatted once a minute
        high = _ID_HIGH[0]
        if high[0] != ms >> 16:
            high = _ID_HIGH[0] = (ms >> 16, f"{ms >> 16:08x}-")
        stamp = _ID_STAMP[0] = (ms, high[1] + _HEX2[ms >> 8 & 0xFF] + _HEX2[ms & 0xFF] + "-7")
    tail = _ID_TAIL[0]
    if tail[0] != n >> 12:
        node = _ID_NODE[0]
        tail = _ID_TAIL[0] = (n >> 12, f"-{0x8000 | node >> 36:04x}-{(node & 0xF_FFFF_FFFF) << 12 | n >> 12:012x}")
    return stamp[1] + _HEX3[n & 0xFFF] + tail[1]


def _draw_node() -> None:
    _ID_NODE[0] = int.from_bytes(os.urandom(7), "big") >> 6  # 50 bits
    _ID_TAIL[0] = (-1, "")


_ID_COUNTER = itertools.count()
_ID_NODE = [0]
_ID_STAMP: list[tuple[int, str]] = [(-1, "")]
_ID_TAIL: list[tuple[int, str]] = [(-1, "")]
_ID_HIGH: list[tuple[int, str]] = [(-1, "")]
_HEX2 = tuple(f"{i:02x}" for i in range(0x100))
_HEX3 = tuple(f"{i:03x}" for i in range(0x1000))
_draw_node()
os.register_at_fork(after_in_child=_draw_node)


def build_events(
    kind: KindConfig,
    after: BroadcastSnapshot,
    previous_status: BroadcastStatus | None,
    topics: Sequence[Topic],
    transporters: Sequence[str],
    *,
    trigger: str,
    reason: str | None = None,
    holders: Collection[str] = (),
    event_ids: Sequence[str] = (),
) -> tuple[BroadcastEvent, ...]:
    """The events of one transition: state-changed to the customer; a re-offer to each notified
    transporter not among ``holders`` (those holding a slot after the transition; none when every one
    holds); the rest to the customer and every notified transporter (``transporters``, in notification
    order). Without ``transporters`` (a store whose statement lists them) a re-offer has no recipients yet.
    ``event_ids`` are the ids of the first events, in order, when a statement wrote them already."""
    customer: tuple[Recipient, ...] = (_recipient(Recipient, ("customer", after.customer_id)),)
    if len(topics) == 1 and topics[0] is _STATE_CHANGED:  # the common case: to the customer only
        return (build_event(kind, after, topics[0], customer, previous_status=previous_status, trigger=trigger,
                            reason=reason, event_id=event_ids[0] if event_ids else None),)
    notified = tuple([_recipient(Recipient, ("transporter", t)) for t in transporters])
    events = []
    ids = iter(event_ids)
    for topic in topics:
        if topic is _STATE_CHANGED:
            recipients = customer
        elif topic is _OFFERED:
            recipients = tuple(r for r in notified if r.id not in holders)
            if notified and not recipients:
                continue
        else:
            recipients = customer + notified
        events.append(build_event(kind, after, topic, recipients, previous_status=previous_status, trigger=trigger,
                                  reason=reason, event_id=next(ids, None)))
    return tuple(events)


def build_offer(
    kind: KindConfig,
    snapshot: BroadcastSnapshot,
    previous_status: BroadcastStatus | None,
    transporters: Sequence[str],
    *,
    trigger: str,
    reason: str | None = None,
) -> tuple[BroadcastEvent, ...]:
    """The offer to newly notified ``transporters`` (one event addressed to each of them; none when
    there is nobody new), carrying the broadcast as ``snapshot`` shows it."""
    if not transporters:
        return ()
    recipients = tuple([_recipient(Recipient, ("transporter", t)) for t in transporters])
    return (build_event(kind, snapshot, _OFFERED, recipients, previous_status=previous_status, trigger=trigger,
                        reason=reason),)


def build_event(kind: KindConfig, snapshot: BroadcastSnapshot, topic: Topic, recipients: tuple[Recipient, ...], *,
                previous_status: BroadcastStatus | None, trigger: str, reason: str | None = None,
                event_id: str | None = None) -> BroadcastEvent:
    """One event about ``snapshot`` (a new id unless ``event_id`` is given: a statement wrote it already)."""
    return _event(
        event_id=event_id if event_id is not None else new_event_id(),
        name=kind.event_name(topic),
        topic=topic,
        kind=snapshot.kind,
        id_field=kind.id_field,
        entity_id=snapshot.id,
        recipients=recipients,
        status=snapshot.status,
        previous_status=previous_status,
        state_changed_at=snapshot.state_changed_at,
        version=snapshot.version,
        slots_filled=snapshot.slots_filled,
        slots_requested=snapshot.slots_requested,
        expires_at=snapshot.expires_at,
        trigger=trigger,
        reason=reason,
    )
