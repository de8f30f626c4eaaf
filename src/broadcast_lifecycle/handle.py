"""``KindHandle``: the commands and queries of one kind of broadcast, resolved once at wiring time.

    bookings = lifecycle.kind("booking")      # an unknown kind fails here, not at the first request
    booking = bookings.create("c-1", slots=2)
    bookings.accept(booking.id, "t-1", slots=1)

Every command takes the same keywords: ``actor`` (recorded in the history, seen by host guards),
``reason`` and ``metadata`` (recorded in the history; the reason also reaches the events),
``idempotency_key`` (see :mod:`broadcast_lifecycle.idempotency`) and ``tx`` (a SQLAlchemy ``Session``
to join: the write commits with it and the events leave after that commit). Every command returns a
:class:`~broadcast_lifecycle.results.CommandResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .clock import require_aware
from .command import new_command
from .errors import InvalidArgument
from .guards import Guard
from .idempotency import fingerprint
from .kinds import KindConfig
from .lifecycle import Trigger
from .records import BroadcastSnapshot, EntityId, HistoryEntry, RecipientRecord
from .results import CommandResult
from .service import SYSTEM_ACTOR
from .stores.base import Adoption, NewBroadcast
from .validation import (
    require_deadline,
    require_id,
    require_key,
    require_metadata,
    require_slots,
    require_transporters,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .service import BroadcastLifecycle

__all__ = ["KindHandle"]


class KindHandle:
    """Commands and queries on the broadcasts of one kind (get one from :meth:`BroadcastLifecycle.kind`)."""

    __slots__ = ("_config", "_lc")

    def __init__(self, lifecycle: BroadcastLifecycle, config: KindConfig) -> None:
        self._lc = lifecycle
        self._config = config

    @property
    def name(self) -> str:
        """The kind's name (``"booking"``)."""
        return self._config.name

    @property
    def config(self) -> KindConfig:
        """The kind's settings: event names, id field, default deadline, policies."""
        return self._config

    def __repr__(self) -> str:
        return f"KindHandle({self._config.name!r})"

    def add_guard(self, trigger: Trigger, guard: Guard) -> None:
        """Run ``guard`` on ``trigger`` for this kind only (see :meth:`BroadcastLifecycle.add_guard`)."""
        self._lc.add_guard(trigger, guard, kind=self._config.name)

    # -- commands --------------------------------------------------------------------------

    def create(
        self, customer_id: str, *, slots: int = 1, entity_id: EntityId | None = None,
        ttl: timedelta | None = None, expires_at: datetime | None = None, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        columns: Mapping[str, Any] | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Create a broadcast of ``slots`` slots for ``customer_id`` in state ``created``.

        ``entity_id`` picks the id (else the store does); ``ttl`` or ``expires_at`` sets a deadline
        now (else ``activate`` does); ``columns`` fills the host model's own columns in the same
        INSERT (``{"pickup": "Dock 4"}``), so a keyed create replays before anything is written. The
        actor defaults to the customer.
        """
        require_id("customer_id", customer_id)
        require_slots("slots", slots)
        meta = require_metadata(metadata)
        who = actor if actor is not None else customer_id
        key = require_key(idempotency_key, who)
        now = self._lc._now()
        deadline = require_deadline(now, ttl, expires_at)
        if deadline is not None and deadline <= now:
            raise InvalidArgument(f"expires_at must be in the future, got {deadline.isoformat()} (now {now})")
        own = require_metadata(columns, name="columns")
        digest = (fingerprint("create", customer_id, slots, entity_id, ttl, expires_at, reason, meta, own)
                  if key else "")
        new = NewBroadcast(self._config, customer_id, slots, now, entity_id, deadline, who, meta, key, digest, reason,
                           own)
        return self._lc._create(new, tx)

    def adopt(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Record as created a broadcast row the host inserted itself, with its own columns.

        For hosts whose model has columns of its own (pickup, vehicle type): add the instance to
        the session, then adopt it in that same session; the creation's history row and event are
        written with it and the event leaves after the commit. The row must be in ``created`` at
        version 1 (the mixin's defaults). The actor defaults to the customer.
        """
        meta = require_metadata(metadata)
        key = require_key(idempotency_key, actor, default_actor="the row's customer")
        entity_id = self._lc._key(self._config.name, entity_id)
        adoption = Adoption(kind=self._config, entity_id=entity_id, actor=actor, reason=reason,
                            metadata=meta, idempotency_key=key,
                            fingerprint=fingerprint("adopt", entity_id, reason, meta) if key else "")
        return self._lc._adopt(adoption, tx)

    def start_broadcast(
        self, entity_id: EntityId, transporters: Sequence[str], *, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: Session | None = None,
    ) -> CommandResult:
        """Notify ``transporters`` (recorded as recipients, each offered the broadcast in ``{KIND}_OFFERED``):
        created -> broadcasting."""
        recipients = require_transporters(transporters)
        return self._run(entity_id, tx, Trigger.START_BROADCAST, actor=actor, reason=reason, metadata=metadata,
                         idempotency_key=idempotency_key, recipients=recipients)

    def notify_more(
        self, entity_id: EntityId, transporters: Sequence[str], *, actor: str | None = None,
        reason: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Add recipients while the broadcast is open (radius expansion); changes no state.

        It is not a transition (the version, which clients order events by, stays), so it writes no
        history row and takes no idempotency key: it is idempotent by nature. Each transporter not
        notified before is offered the broadcast (``{KIND}_OFFERED``, written with it); an already
        notified one is left as it is and offered nothing again. ``reason`` reaches the offer;
        ``actor`` is accepted like every command's but nothing records it (there is no history row).
        On an overdue broadcast it expires it instead and raises ``TransitionRefused("expired at ...")``.
        """
        recipients = require_transporters(transporters)
        return self._lc._notify_more(self._config, self._lc._key(self._config.name, entity_id), recipients, reason, tx)

    def activate(
        self, entity_id: EntityId, *, ttl: timedelta | None = None, expires_at: datetime | None = None,
        actor: str | None = None, reason: str | None = None, metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Open for acceptances until ``expires_at`` (or now + ``ttl``, or the kind's default ttl,
        or a deadline set at creation)."""
        require_deadline(None, ttl, expires_at)
        fixed = require_aware("expires_at", expires_at) if expires_at is not None else None
        return self._run(entity_id, tx, Trigger.ACTIVATE, actor=actor, reason=reason, metadata=metadata,
                         idempotency_key=idempotency_key, deadline=fixed, ttl=ttl)

    def extend(
        self, entity_id: EntityId, *, ttl: timedelta | None = None, expires_at: datetime | None = None,
        actor: str | None = None, reason: str | None = None, metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Move the deadline of an open broadcast later, to ``expires_at`` (or now + ``ttl``); its state
        stays. The customer and every notified transporter get ``{KIND}_EXTENDED`` with the new deadline.
        A deadline not later than the current one, or none set yet, is ``TransitionRefused`` (``code``
        ``deadline_later``); a closed broadcast ``InvalidTransition`` (naming the states it is allowed
        from); neither or both of ``expires_at`` and ``ttl``, or a naive time, ``InvalidArgument``."""
        if ttl is None and expires_at is None:
            raise InvalidArgument("extend needs the new deadline: pass expires_at= or ttl=")
        require_deadline(None, ttl, expires_at)
        fixed = require_aware("expires_at", expires_at) if expires_at is not None else None
        return self._run(entity_id, tx, Trigger.EXTEND, actor=actor, reason=reason, metadata=metadata,
                         idempotency_key=idempotency_key, deadline=fixed, ttl=ttl)

    def accept(
        self, entity_id: EntityId, transporter_id: str, *, slots: int = 1, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: Session | None = None,
    ) -> CommandResult:
        """``transporter_id`` takes ``slots`` slots: -> partially_filled or fully_filled.

        The actor defaults to the transporter.
        """
        require_id("transporter_id", transporter_id)
        require_slots("slots", slots)
        return self._run(entity_id, tx, Trigger.ACCEPT, actor=actor if actor is not None else transporter_id,
                         reason=reason, metadata=metadata, idempotency_key=idempotency_key,
                         transporter_id=transporter_id, slots=slots)

    def release(
        self, entity_id: EntityId, transporter_id: str, *, slots: int = 1, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: Session | None = None,
    ) -> CommandResult:
        """``transporter_id`` gives back ``slots`` slots: -> partially_filled or active.

        The actor defaults to the transporter.
        """
        require_id("transporter_id", transporter_id)
        require_slots("slots", slots)
        return self._run(entity_id, tx, Trigger.RELEASE, actor=actor if actor is not None else transporter_id,
                         reason=reason, metadata=metadata, idempotency_key=idempotency_key,
                         transporter_id=transporter_id, slots=slots)

    def start_trip(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """The trip begins: fully_filled (or partially_filled, if the kind allows) -> in_progress."""
        return self._run(entity_id, tx, Trigger.START_TRIP, actor=actor, reason=reason, metadata=metadata,
                         idempotency_key=idempotency_key)

    def complete(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """The trip finished: in_progress -> completed."""
        return self._run(entity_id, tx, Trigger.COMPLETE, actor=actor, reason=reason, metadata=metadata,
                         idempotency_key=idempotency_key)

    def cancel(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Cancel a broadcast that has not started its trip; the reason reaches every recipient."""
        return self._run(entity_id, tx, Trigger.CANCEL, actor=actor, reason=reason, metadata=metadata,
                         idempotency_key=idempotency_key)

    def expire(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None, tx: Session | None = None,
    ) -> CommandResult:
        """Expire a broadcast whose deadline has passed by the lifecycle's clock (the sweeper,
        ``BroadcastLifecycle.expire_due``, does this set-wise). The actor defaults to ``system``."""
        return self._run(entity_id, tx, Trigger.EXPIRE, actor=actor if actor is not None else SYSTEM_ACTOR,
                         reason=reason, metadata=metadata, idempotency_key=idempotency_key)

    # -- queries ---------------------------------------------------------------------------

    def get(self, entity_id: EntityId, *, tx: Session | None = None) -> BroadcastSnapshot:
        """The broadcast as last committed; ``BroadcastNotFound`` for an unknown id."""
        kind = self._config.name
        return self._lc.store.load(kind, self._lc._key(kind, entity_id), tx=tx).snapshot

    def history(self, entity_id: EntityId, *, tx: Session | None = None) -> tuple[HistoryEntry, ...]:
        """The broadcast's transitions, oldest first."""
        kind = self._config.name
        return self._lc.store.history(kind, self._lc._key(kind, entity_id), tx)

    def recipients(self, entity_id: EntityId, *, tx: Session | None = None) -> tuple[RecipientRecord, ...]:
        """Transporters notified of the broadcast, in notification order, with the slots they hold."""
        kind = self._config.name
        return self._lc.store.recipients(kind, self._lc._key(kind, entity_id), tx)

    # -- internals -------------------------------------------------------------------------

    def _run(self, entity_id: EntityId, tx: object, trigger: Trigger, *, metadata: Mapping[str, Any] | None,
             idempotency_key: str | None, actor: str | None, **fields: Any) -> CommandResult:
        entity_id = self._lc._key(self._config.name, entity_id)
        meta = {} if metadata is None else require_metadata(metadata)  # (the usual case without the call)
        key = None if idempotency_key is None else require_key(idempotency_key, actor)
        digest = fingerprint(trigger.value, entity_id, meta, sorted(fields.items())) if key else ""
        command = new_command(config=self._config, trigger=trigger, metadata=meta, fingerprint=digest, actor=actor,
                           idempotency_key=key, **fields)
        return self._lc._run(command, entity_id, tx)
