"""What each endpoint does, without HTTP: the lifecycle's commands with the user as actor, the
idempotency keys scoped to that user, and the app's reads.

Idempotency: the library's keys are global and each is checked against the actor that first used
it, so the app prefixes the client's ``Idempotency-Key`` with the user (``customer:c-1/<key>``): two
users may send the same key without meeting. A creation runs three commands (create,
start_broadcast, activate), each with the key and its step; a retried creation replays what was
done and carries on from the state it finds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandResult,
    EntityId,
    TransitionRefused,
)

from .access import allowed_actions, may_see, refusal_for, require_role
from .auth import User
from .db import nearby_transporters, open_offers
from .errors import BadRequest, Forbidden
from .models import MODELS, Booking, Order
from .payloads import NewBroadcast, broadcast_json, details_json, history_json
from .settings import Settings

__all__ = ["Created", "Marketplace", "scoped_key"]

T = TypeVar("T")
MAX_CLIENT_KEY = 120


def scoped_key(user: User, key: str | None, step: str | None = None) -> str | None:
    """The library key for a client's ``Idempotency-Key``: the user's, and the step's within a request."""
    if key is None:
        return None
    if not key or len(key) > MAX_CLIENT_KEY or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_CLIENT_KEY} printable characters")
    return f"{user.scope}/{key}" + (f"/{step}" if step else "")


@dataclass(frozen=True)
class Created:
    """A creation's outcome: the broadcast as it now is, and whether the request was a replay."""

    snapshot: BroadcastSnapshot
    replayed: bool


class Marketplace:
    """The app's operations on bookings and orders."""

    def __init__(self, settings: Settings, lifecycle: AsyncBroadcastLifecycle, engine: AsyncEngine) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.engine = engine

    def handle(self, kind: str) -> AsyncKindHandle:
        """The lifecycle's handle of ``kind`` (``booking`` or ``order``)."""
        return self.lifecycle.kind(kind)

    async def create(self, user: User, kind: str, new: NewBroadcast, key: str | None) -> Created:
        """Create the broadcast, offer it to the transporters near the pickup, open it until the
        deadline. Nothing is written when nobody is near."""
        require_role(user, "customer", f"create a {kind}")
        handle = self.handle(kind)
        nearby = await self._nearby(new)
        created = await handle.create(user.id, slots=new.slots, columns=new.columns, actor=user.id,
                                      idempotency_key=scoped_key(user, key, "create"))
        snap = created.snapshot
        if created.replayed:
            snap = await handle.get(snap.id)
        if snap.status is BroadcastStatus.CREATED:
            snap = (await handle.start_broadcast(snap.id, nearby, actor=user.id,
                                                 idempotency_key=scoped_key(user, key, "start_broadcast"))).snapshot
        if snap.status is BroadcastStatus.BROADCASTING:
            snap = (await handle.activate(snap.id, ttl=new.ttl or self.settings.offer_ttl, actor=user.id,
                                          idempotency_key=scoped_key(user, key, "activate"))).snapshot
        return Created(snap, created.replayed)

    async def _nearby(self, new: NewBroadcast) -> list[str]:
        lat, lon = new.pickup
        async with AsyncSession(self.engine) as session:
            found = await nearby_transporters(session, lat, lon, new.vehicle_types,
                                              radius_km=self.settings.radius_km, limit=self.settings.max_offers)
        if not found:
            raise BadRequest(f"no transporter with a {' or '.join(new.vehicle_types)} within "
                             f"{self.settings.radius_km:g} km of the pickup")
        return found

    async def _guarded(self, handle: AsyncKindHandle, user: User, entity_id: EntityId,
                       command: Callable[[], Awaitable[T]]) -> T:
        """Run ``command``; a refusal of a user with no part in the broadcast becomes 403."""
        try:
            return await command()
        except TransitionRefused as refused:
            raise await refusal_for(handle, user, entity_id, refused) from refused

    async def accept(self, user: User, kind: str, entity_id: EntityId, slots: int, key: str | None) -> CommandResult:
        """The transporter takes ``slots`` slots."""
        require_role(user, "transporter", f"accept a {kind}")
        handle = self.handle(kind)
        return await self._guarded(handle, user, entity_id, lambda: handle.accept(
            entity_id, user.id, slots=slots, idempotency_key=scoped_key(user, key)))

    async def release(self, user: User, kind: str, entity_id: EntityId, slots: int, reason: str | None,
                      key: str | None) -> CommandResult:
        """The transporter gives back ``slots`` slots."""
        require_role(user, "transporter", f"release a {kind}")
        handle = self.handle(kind)
        return await self._guarded(handle, user, entity_id, lambda: handle.release(
            entity_id, user.id, slots=slots, reason=reason, idempotency_key=scoped_key(user, key)))

    async def by_owner(self, user: User, kind: str, entity_id: EntityId, trigger: str, reason: str | None,
                       key: str | None) -> CommandResult:
        """``cancel``, ``start_trip`` or ``complete``, by the broadcast's customer (the host guard checks)."""
        require_role(user, "customer", f"{trigger} a {kind}")
        handle = self.handle(kind)
        command = {"cancel": handle.cancel, "start_trip": handle.start_trip, "complete": handle.complete}[trigger]
        return await self._guarded(handle, user, entity_id, lambda: command(
            entity_id, actor=user.id, reason=reason, idempotency_key=scoped_key(user, key)))

    async def read(self, user: User, kind: str, entity_id: EntityId) -> dict[str, Any]:
        """The broadcast, its own columns, what the user may do with it now (``actions``) and its history
        (a transporter also sees the slots it holds)."""
        handle = self.handle(kind)
        snap = await handle.get(entity_id)
        if not await may_see(handle, user, entity_id, snap):
            raise Forbidden(f"{kind} {entity_id} is not yours")
        held = None
        if user.role == "transporter":
            held = next(r.slots_held for r in await handle.recipients(entity_id) if r.transporter_id == user.id)
        async with AsyncSession(self.engine) as session:
            body = await self._described(session, user, snap, held)
        body["history"] = history_json(await handle.history(entity_id))
        return body

    async def _described(self, session: AsyncSession, user: User, snap: BroadcastSnapshot,
                         held: int | None) -> dict[str, Any]:
        """The broadcast's lifecycle fields, its own columns, the user's ``actions`` (and ``heldSlots``
        for a transporter)."""
        row: Booking | Order | None = await session.get(MODELS[snap.kind], snap.id)
        assert row is not None  # the lifecycle just read it
        body = broadcast_json(snap) | details_json(row)
        body["actions"] = allowed_actions(user, snap, self.handle(snap.kind).config, held or 0)
        if held is not None:
            body["heldSlots"] = held
        return body

    async def offers(self, user: User) -> list[dict[str, Any]]:
        """What the transporter may act on (the open broadcasts offered to them, and the filled ones
        they hold slots of), oldest offer first, described as :meth:`read` does, without history."""
        require_role(user, "transporter", "list offers")
        async with AsyncSession(self.engine) as session:
            found = await open_offers(session, user.id)
            return [await self._described(session, user, await self.handle(kind).get(entity_id), held)
                    for kind, entity_id, held in found]

    async def mine(self, user: User) -> list[dict[str, Any]]:
        """The customer's broadcasts, newest first, described as :meth:`read` does, without history."""
        require_role(user, "customer", "list their broadcasts")
        found: list[tuple[Any, str, EntityId]] = []
        async with AsyncSession(self.engine) as session:
            for kind, model in MODELS.items():
                rows = await session.execute(select(model.created_at, model.id).where(model.customer_id == user.id))
                found.extend((created, kind, entity_id) for created, entity_id in rows)
            found.sort(key=lambda item: item[0], reverse=True)
            return [await self._described(session, user, await self.handle(kind).get(entity_id), None)
                    for _, kind, entity_id in found]
