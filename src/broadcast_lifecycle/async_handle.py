"""``AsyncKindHandle``: the commands and queries of one kind of broadcast, awaited.

    bookings = lifecycle.kind("booking")      # AsyncBroadcastLifecycle.kind
    booking = await bookings.create("c-1", slots=2)
    await bookings.accept(booking.id, "t-1")

The same commands, keywords, results and errors as :class:`~broadcast_lifecycle.handle.KindHandle`,
whose code each one runs in the greenlet bridge; ``tx`` is the host's ``AsyncSession``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import InvalidArgument
from .guards import Guard
from .handle import KindHandle
from .kinds import KindConfig
from .lifecycle import Trigger
from .records import BroadcastSnapshot, EntityId, HistoryEntry, RecipientRecord
from .results import CommandResult
from .stores.async_sqlalchemy import bridge

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["AsyncKindHandle"]

T = TypeVar("T")


class AsyncKindHandle:
    """Commands and queries on the broadcasts of one kind (get one from ``AsyncBroadcastLifecycle.kind``)."""

    __slots__ = ("_sync",)

    def __init__(self, handle: KindHandle) -> None:
        self._sync = handle

    @property
    def name(self) -> str:
        """The kind's name (``"booking"``)."""
        return self._sync.name

    @property
    def config(self) -> KindConfig:
        """The kind's settings: event names, id field, default deadline, policies."""
        return self._sync.config

    def __repr__(self) -> str:
        return f"AsyncKindHandle({self._sync.name!r})"

    def add_guard(self, trigger: Trigger, guard: Guard) -> None:
        """Run ``guard`` on ``trigger`` for this kind only (see ``AsyncBroadcastLifecycle.add_guard``)."""
        self._sync.add_guard(trigger, guard)

    async def _call(self, command: Callable[..., T], tx: AsyncSession | None, *args: Any, **kwargs: Any) -> T:
        return await bridge(command, *args, tx=_joined(tx), **kwargs)

    # -- commands (see KindHandle for each one's rules) ------------------------------------

    async def create(
        self, customer_id: str, *, slots: int = 1, entity_id: EntityId | None = None,
        ttl: timedelta | None = None, expires_at: datetime | None = None, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        columns: Mapping[str, Any] | None = None, tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Create a broadcast of ``slots`` slots for ``customer_id`` in state ``created`` (see
        :meth:`KindHandle.create <broadcast_lifecycle.handle.KindHandle.create>`)."""
        return await self._call(self._sync.create, tx, customer_id, slots=slots, entity_id=entity_id, ttl=ttl,
                                expires_at=expires_at, actor=actor, reason=reason, metadata=metadata,
                                idempotency_key=idempotency_key, columns=columns)

    async def adopt(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Record as created a broadcast row the host inserted itself in ``tx``, with its own columns."""
        return await self._call(self._sync.adopt, tx, entity_id, actor=actor, reason=reason, metadata=metadata,
                                idempotency_key=idempotency_key)

    async def start_broadcast(
        self, entity_id: EntityId, transporters: Sequence[str], *, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Notify ``transporters`` (recorded as recipients): created -> broadcasting."""
        return await self._call(self._sync.start_broadcast, tx, entity_id, transporters, actor=actor, reason=reason,
                                metadata=metadata, idempotency_key=idempotency_key)

    async def notify_more(
        self, entity_id: EntityId, transporters: Sequence[str], *, actor: str | None = None,
        reason: str | None = None, tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Add recipients while the broadcast is open (radius expansion); changes no state."""
        return await self._call(self._sync.notify_more, tx, entity_id, transporters, actor=actor, reason=reason)

    async def activate(
        self, entity_id: EntityId, *, ttl: timedelta | None = None, expires_at: datetime | None = None,
        actor: str | None = None, reason: str | None = None, metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None, tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Open for acceptances until ``expires_at`` (or now + ``ttl``, or the kind's default ttl)."""
        return await self._call(self._sync.activate, tx, entity_id, ttl=ttl, expires_at=expires_at, actor=actor,
                                reason=reason, metadata=metadata, idempotency_key=idempotency_key)

    async def extend(
        self, entity_id: EntityId, *, ttl: timedelta | None = None, expires_at: datetime | None = None,
        actor: str | None = None, reason: str | None = None, metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None, tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Move the deadline of an open broadcast later (see
        :meth:`KindHandle.extend <broadcast_lifecycle.handle.KindHandle.extend>`)."""
        return await self._call(self._sync.extend, tx, entity_id, ttl=ttl, expires_at=expires_at, actor=actor,
                                reason=reason, metadata=metadata, idempotency_key=idempotency_key)

    async def accept(
        self, entity_id: EntityId, transporter_id: str, *, slots: int = 1, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """``transporter_id`` takes ``slots`` slots: -> partially_filled or fully_filled."""
        return await self._call(self._sync.accept, tx, entity_id, transporter_id, slots=slots, actor=actor,
                                reason=reason, metadata=metadata, idempotency_key=idempotency_key)

    async def release(
        self, entity_id: EntityId, transporter_id: str, *, slots: int = 1, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """``transporter_id`` gives back ``slots`` slots: -> partially_filled or active."""
        return await self._call(self._sync.release, tx, entity_id, transporter_id, slots=slots, actor=actor,
                                reason=reason, metadata=metadata, idempotency_key=idempotency_key)

    async def start_trip(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """The trip begins: fully_filled (or partially_filled, if the kind allows) -> in_progress."""
        return await self._call(self._sync.start_trip, tx, entity_id, actor=actor, reason=reason,
                                metadata=metadata, idempotency_key=idempotency_key)

    async def complete(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """The trip finished: in_progress -> completed."""
        return await self._call(self._sync.complete, tx, entity_id, actor=actor, reason=reason,
                                metadata=metadata, idempotency_key=idempotency_key)

    async def cancel(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Cancel a broadcast that has not started its trip; the reason reaches every recipient."""
        return await self._call(self._sync.cancel, tx, entity_id, actor=actor, reason=reason,
                                metadata=metadata, idempotency_key=idempotency_key)

    async def expire(
        self, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
        metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        tx: AsyncSession | None = None,
    ) -> CommandResult:
        """Expire a broadcast whose deadline has passed (by the clock); the actor defaults to ``system``."""
        return await self._call(self._sync.expire, tx, entity_id, actor=actor, reason=reason,
                                metadata=metadata, idempotency_key=idempotency_key)

    # -- queries ---------------------------------------------------------------------------

    async def get(self, entity_id: EntityId, *, tx: AsyncSession | None = None) -> BroadcastSnapshot:
        """The broadcast as last committed; ``BroadcastNotFound`` for an unknown id."""
        return await self._call(self._sync.get, tx, entity_id)

    async def history(self, entity_id: EntityId, *, tx: AsyncSession | None = None) -> tuple[HistoryEntry, ...]:
        """The broadcast's transitions, oldest first."""
        return await self._call(self._sync.history, tx, entity_id)

    async def recipients(self, entity_id: EntityId, *,
                         tx: AsyncSession | None = None) -> tuple[RecipientRecord, ...]:
        """Transporters notified of the broadcast, in notification order, with the slots they hold."""
        return await self._call(self._sync.recipients, tx, entity_id)


def _joined(tx: object) -> Session | None:
    """The sync ``Session`` behind the host's ``AsyncSession`` (what the engine's code joins)."""
    if tx is None:
        return None
    from sqlalchemy.ext.asyncio import AsyncSession

    if not isinstance(tx, AsyncSession):
        raise InvalidArgument(f"tx must be a sqlalchemy.ext.asyncio.AsyncSession, got {type(tx).__name__}")
    return tx.sync_session
