"""The store contract's table of bad inputs: each call, the error it must raise on every store and
a piece of text its message must contain (the argument it names, or what is allowed).

Every call is made on a lifecycle whose kinds are ``booking`` and ``order`` and which holds an
active booking (the ``entity_id`` handed to the call); none of them may change anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from .errors import BroadcastError, BroadcastNotFound, InvalidArgument, show_id
from .records import EntityId
from .service import BroadcastLifecycle

__all__ = ["BAD_INPUTS", "FOREIGN_TO_INT_KEYS", "BadInput", "foreign_id_inputs"]

Call = Callable[[BroadcastLifecycle, EntityId], object]


@dataclass(frozen=True, slots=True)
class BadInput:
    """One row: ``call`` must raise ``error`` with ``says`` in its message."""

    label: str
    call: Call
    error: type[BroadcastError]
    says: str


def _any(value: object) -> Any:
    """``value`` typed as anything: the table passes what the signatures forbid, on purpose."""
    return value


_NAIVE = datetime(2030, 1, 1, 12, 0)
_PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_UNKNOWN = 987654
_TOO_BIG = 2**63  # fits no SQL integer column
_LOOKUPS: tuple[tuple[str, Callable[[BroadcastLifecycle, Any], object]], ...] = (
    ("get", lambda lc, i: lc.kind("booking").get(i)),
    ("history", lambda lc, i: lc.kind("booking").history(i)),
    ("recipients", lambda lc, i: lc.kind("booking").recipients(i)),
    ("start_broadcast", lambda lc, i: lc.kind("booking").start_broadcast(i, ["t9"])),
    ("notify_more", lambda lc, i: lc.kind("booking").notify_more(i, ["t9"])),
    ("activate", lambda lc, i: lc.kind("booking").activate(i)),
    ("accept", lambda lc, i: lc.kind("booking").accept(i, "t1")),
    ("release", lambda lc, i: lc.kind("booking").release(i, "t1")),
    ("start_trip", lambda lc, i: lc.kind("booking").start_trip(i)),
    ("complete", lambda lc, i: lc.kind("booking").complete(i)),
    ("cancel", lambda lc, i: lc.kind("booking").cancel(i)),
    ("expire", lambda lc, i: lc.kind("booking").expire(i)),
)
"""Every call that looks a broadcast up by id."""


def _on(entity_id: object, call: Callable[[BroadcastLifecycle, Any], object]) -> Call:
    """``call`` made with ``entity_id`` instead of the active booking's id."""
    return lambda lc, _: call(lc, entity_id)


def _with(value: object, call: Callable[[BroadcastLifecycle, EntityId, Any], object]) -> Call:
    """``call`` made on the active booking with ``value`` for the argument under test."""
    return lambda lc, entity_id: call(lc, entity_id, value)


def _not_found(label: str, entity_id: object) -> tuple[BadInput, ...]:
    """Each lookup of ``entity_id`` is ``BroadcastNotFound`` naming it."""
    return tuple(BadInput(f"{name} with {label}", _on(entity_id, call), BroadcastNotFound, show_id(entity_id))
                 for name, call in _LOOKUPS)


BAD_INPUTS: tuple[BadInput, ...] = (
    # -- slots: a whole number that fits a 32-bit signed INTEGER column ---------------------------
    *(BadInput(f"create with slots={slots!r}", _on(slots, lambda lc, s: lc.kind("booking").create("c1", slots=s)),
               InvalidArgument, "slots must be a whole number from 1 to 2147483647")
      for slots in (0, -1, 2**31, 2**63, True, 1.5, "2", None)),
    BadInput("accept with slots=2**31", lambda lc, i: lc.kind("booking").accept(i, "t1", slots=2**31),
             InvalidArgument, "32-bit"),
    BadInput("release with slots=0", lambda lc, i: lc.kind("booking").release(i, "t1", slots=0),
             InvalidArgument, "slots"),
    # -- ids of people -----------------------------------------------------------------------------
    *(BadInput(f"create with customer_id={value!r}", _on(value, lambda lc, v: lc.kind("booking").create(v)),
               InvalidArgument, "customer_id must be a non-empty string") for value in (None, "", 7)),
    *(BadInput(f"accept with transporter_id={value!r}", _with(value, lambda lc, i, v: lc.kind("booking").accept(i, v)),
               InvalidArgument, "transporter_id must be a non-empty string") for value in (None, "", 7)),
    *(BadInput(f"start_broadcast with transporters={value!r}",
               _with(value, lambda lc, i, v: lc.kind("booking").start_broadcast(i, v)), InvalidArgument, says)
      for value, says in ((None, "transporters must be a list of transporter ids"),
                          ("t1", "transporters must be a list of transporter ids"),
                          (7, "transporters must be a list of transporter ids"),
                          ([["t1"]], "transporters must be a list of transporter ids"),
                          ([], "at least one transporter"),
                          ([""], "each transporter id must be a non-empty string"),
                          ([None], "each transporter id must be a non-empty string"))),
    BadInput("notify_more with transporters=None", lambda lc, i: lc.kind("booking").notify_more(i, _any(None)),
             InvalidArgument, "transporters must be a list of transporter ids"),
    # -- the id of a new broadcast: an int (64-bit), a non-empty string or a UUID ---------------------
    *(BadInput(f"create with entity_id={value!r}",
               _on(value, lambda lc, v: lc.kind("booking").create("c1", entity_id=v)), InvalidArgument,
               "entity_id must be an int (64-bit signed, not a bool), a non-empty string or a UUID")
      for value in (1.5, True, "", [1], _TOO_BIG)),
    # -- ids no broadcast has ------------------------------------------------------------------------
    *_not_found("an unknown id", _UNKNOWN),
    *_not_found("an id no column holds", _TOO_BIG),
    *_not_found("a float id", 1.5),
    *_not_found("a list id", [1]),
    # -- times ---------------------------------------------------------------------------------------
    BadInput("create with a naive expires_at", lambda lc, _: lc.kind("booking").create("c1", expires_at=_NAIVE),
             InvalidArgument, "expires_at must be timezone-aware"),
    BadInput("create with a past expires_at", lambda lc, _: lc.kind("booking").create("c1", expires_at=_PAST),
             InvalidArgument, "expires_at must be in the future"),
    BadInput("activate with a negative ttl", lambda lc, i: lc.kind("booking").activate(i, ttl=timedelta(seconds=-1)),
             InvalidArgument, "ttl must be a positive timedelta"),
    BadInput("activate with ttl=60", lambda lc, i: lc.kind("booking").activate(i, ttl=_any(60)),
             InvalidArgument, "ttl must be a positive timedelta"),
    BadInput("activate with ttl and expires_at",
             lambda lc, i: lc.kind("booking").activate(i, ttl=timedelta(minutes=1), expires_at=_PAST),
             InvalidArgument, "not both"),
    BadInput("activate with a naive expires_at", lambda lc, i: lc.kind("booking").activate(i, expires_at=_NAIVE),
             InvalidArgument, "expires_at must be timezone-aware"),
    BadInput("expire_due with batch_size=0", lambda lc, _: lc.expire_due(batch_size=0),
             InvalidArgument, "batch_size must be at least 1"),
    BadInput("create with ttl and expires_at",
             lambda lc, _: lc.kind("booking").create("c1", ttl=timedelta(minutes=1), expires_at=_PAST),
             InvalidArgument, "not both"),
    # -- idempotency keys and metadata ------------------------------------------------------------------
    BadInput("a key without an actor", lambda lc, i: lc.kind("booking").cancel(i, idempotency_key="k"),
             InvalidArgument, "idempotency_key needs an actor"),
    BadInput("an empty key", lambda lc, i: lc.kind("booking").accept(i, "t1", idempotency_key=""),
             InvalidArgument, "idempotency_key must be a non-empty string of at most 200 characters"),
    BadInput("a key of 201 characters", lambda lc, _: lc.kind("booking").create("c1", idempotency_key="k" * 201),
             InvalidArgument, "at most 200 characters"),
    BadInput("an int key", lambda lc, i: lc.kind("booking").accept(i, "t1", idempotency_key=_any(7)),
             InvalidArgument, "idempotency_key must be a non-empty string"),
    BadInput("metadata with an int key", lambda lc, i: lc.kind("booking").cancel(i, metadata=_any({1: "x"})),
             InvalidArgument, "metadata must be a mapping with string keys"),
    BadInput("metadata as a list", lambda lc, _: lc.kind("booking").create("c1", metadata=_any(["x"])),
             InvalidArgument, "metadata must be a mapping with string keys"),
    BadInput("a guard on an unknown trigger", lambda lc, _: lc.add_guard(_any("nonsense"), lambda s, c: None),
             InvalidArgument, "trigger must be one of"),
    # -- kinds ---------------------------------------------------------------------------------------
    BadInput("an unknown kind", lambda lc, _: lc.kind("parcel"), InvalidArgument, "unknown kind 'parcel'"),
)
"""Inputs every store refuses alike."""


def foreign_id_inputs(foreign_ids: tuple[object, ...]) -> tuple[BadInput, ...]:
    """Rows for ids a store's key cannot hold (another type than its key's): every lookup is
    ``BroadcastNotFound``, a create with one as its explicit id ``InvalidArgument`` naming ``entity_id``."""
    rows: list[BadInput] = []
    for foreign in foreign_ids:
        label = f"{type(foreign).__name__} id {foreign!r}"
        rows += _not_found(label, foreign)
        rows.append(BadInput(f"create with the {label}",
                             _on(foreign, lambda lc, f: lc.kind("booking").create("c1", entity_id=f)),
                             InvalidArgument, "entity_id must be"))
    return tuple(rows)


FOREIGN_TO_INT_KEYS: tuple[object, ...] = ("bk-17", "07", UUID("12345678-1234-5678-1234-567812345678"))
"""Ids an integer key cannot hold, not even as text: a digit string that is exactly an int's text
(``"777"``) names that int on a store with typed keys (see ``TypedKeys``); ``"07"`` names none."""
