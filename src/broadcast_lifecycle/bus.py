"""The signal bus: blinker signals in a private namespace, sent after commit.

Every receiver is connected under a durable *name* (by default its module-qualified name, such as
``myapp.sockets.publish``). The outbox records delivery per name, so a receiver that fails is retried
alone and a relay in another process skips the receivers that already handled an event.

Unlike a bare blinker ``send``, one receiver raising does not stop the others: every failure is
logged and returned in the :class:`Delivery`, so the caller can keep the event for the relay.
Receivers run in connection order, whether they were connected to one event name or to every
event. They are held strongly, so a closure connected by the host is never dropped silently. A
receiver may be a coroutine function: it is awaited on the event loop it was connected on (see
:mod:`~broadcast_lifecycle.loop_receivers`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from blinker import ANY, Namespace

from .errors import InvalidArgument
from .events import BroadcastEvent
from .loop_receivers import LoopReceiver, is_coroutine_receiver

__all__ = ["Deduplicator", "Delivery", "Receiver", "ReceiverFailure", "SignalBus", "receiver_name"]

logger = logging.getLogger(__name__)

Receiver = Callable[[BroadcastEvent], "Awaitable[None] | None"]
"""A host callback: it gets each event it subscribed to (a coroutine function is awaited on its loop)."""

MAX_NAME_LENGTH = 200
"""The longest receiver name the SQL store's ``bl_deliveries.receiver`` column holds."""

_EVERY_EVENT = "*"


def receiver_name(receiver: Callable[..., object]) -> str:
    """The default durable name of ``receiver``: ``module.qualified_name`` of the function (or of a
    callable object's class). Wrappers that set ``__wrapped__`` (``functools.wraps``,
    :class:`Deduplicator`) and ``functools.partial`` are named after what they wrap."""
    target: Any = receiver
    for _ in range(100):  # a chain of wrappers, never a cycle
        if isinstance(target, functools.partial):
            target = target.func
        elif hasattr(target, "__wrapped__"):
            target = target.__wrapped__
        else:
            break
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(target).__qualname__
    module = getattr(target, "__module__", None)
    if not isinstance(module, str):
        module = type(target).__module__
    return f"{module}.{qualname}"


@dataclass(frozen=True, slots=True)
class ReceiverFailure:
    """A receiver (by name) that raised while handling an event."""

    receiver: str
    error: BaseException

    def error_text(self) -> str:
        """``ErrorType: message``, as stored in the receiver's last error."""
        return f"{type(self.error).__name__}: {self.error}"

    def describe(self) -> str:
        """``receiver: ErrorType: message``, as stored in the outbox's last error."""
        return f"{self.receiver}: {self.error_text()}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending one event: which receivers matched it (in the order they run), which
    handled it, which raised; a matched receiver in neither was skipped (``send(skip=...)``)."""

    event: BroadcastEvent
    matched: tuple[str, ...]
    handled: tuple[str, ...] = ()
    failures: tuple[ReceiverFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no receiver raised."""
        return not self.failures


@dataclass(frozen=True, slots=True, eq=False)
class _Connection:
    """What is connected to a blinker signal: the host's receiver, its name and its place in line."""

    name: str
    receiver: Receiver
    order: int

    def __call__(self, event: BroadcastEvent) -> None:  # blinker wants a callable; send() calls .receiver
        self.receiver(event)


def _order(connection: _Connection) -> int:
    return connection.order


class SignalBus:
    """Routes events to named receivers by event name (or to receivers of every event), in
    connection order."""

    def __init__(self) -> None:
        self._namespace = Namespace()
        self._lock = threading.Lock()
        self._connections: dict[str, _Connection] = {}
        self._counter = itertools.count()

    def connect(self, receiver: Receiver, *, name: str | None = None, event_name: str | None = None,
                kind: str | None = None) -> Callable[[], None]:
        """Call ``receiver`` for each event named ``event_name`` (all events when ``None``), of
        ``kind`` only when given. Returns a function that disconnects it.

        ``name`` is the receiver's durable name, under which the outbox records what it handled:
        keep it stable across deploys and the same in every process that connects the receiver.
        It defaults to :func:`receiver_name`; a name already connected is an ``InvalidArgument``.

        A coroutine function must be connected while its event loop runs; it is awaited on that
        loop, never on another.
        """
        if not callable(receiver):
            raise InvalidArgument(f"receiver must be callable (it gets each BroadcastEvent), got {receiver!r}")
        durable = receiver_name(receiver) if name is None else name
        if not isinstance(durable, str) or not durable.strip() or len(durable) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"name must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
                                  f"got {durable!r}")
        if is_coroutine_receiver(receiver):
            receiver = LoopReceiver(receiver)  # type: ignore[arg-type]
        signal = self._namespace.signal(event_name or _EVERY_EVENT)
        sender = ANY if kind is None else kind
        connection = _Connection(durable, receiver, next(self._counter))
        with self._lock:
            if durable in self._connections:
                raise InvalidArgument(
                    f"a receiver named {durable!r} is already connected; pass name= to connect "
                    f"{receiver!r} under a name of its own (the outbox tracks delivery by name)")
            self._connections[durable] = connection
            signal.connect(connection, sender=sender, weak=False)

        def disconnect() -> None:
            with self._lock:
                if self._connections.get(durable) is connection:
                    del self._connections[durable]
                    signal.disconnect(connection, sender=sender)

        return disconnect

    def has_receivers(self) -> bool:
        """True when any receiver is connected."""
        return bool(self._connections)

    def names(self) -> tuple[str, ...]:
        """The names of the connected receivers, in connection order."""
        with self._lock:
            return tuple(self._connections)

    def send(self, event: BroadcastEvent, *, skip: Collection[str] = (), retry: bool = False) -> Delivery:
        """Deliver ``event`` to each matching receiver in connection order, isolating their failures;
        receivers named in ``skip`` are matched but not called. A failure is logged with its traceback,
        or as one warning line on a ``retry`` (the relay's later attempts: the first one had it)."""
        connections: list[Any] = []
        for signal_name in (event.name, _EVERY_EVENT):
            signal = self._namespace.get(signal_name)
            if signal is not None:
                connections.extend(signal.receivers_for(event.kind))
        if len(connections) > 1:
            connections.sort(key=_order)  # blinker keeps receivers in a set: restore connection order
        failures: list[ReceiverFailure] = []
        for connection in connections:
            if skip and connection.name in skip:
                continue
            try:
                connection.receiver(event)
            except Exception as exc:
                if retry:
                    logger.warning("receiver %s failed again on %s %s: %s: %s", connection.name, event.name,
                                   event.event_id, type(exc).__name__, exc)
                else:
                    logger.exception("receiver %s failed on %s %s", connection.name, event.name, event.event_id)
                failures.append(ReceiverFailure(connection.name, exc))
        matched = tuple([c.name for c in connections])
        if not failures and not skip:
            return Delivery(event, matched, matched)  # the usual case: every receiver handled it
        failed = {f.receiver for f in failures}
        handled = tuple(name for name in matched if name not in failed and name not in skip)
        return Delivery(event, matched, handled, tuple(failures))


class Deduplicator:
    """Wraps a receiver so that it handles each ``event_id`` once, however often it is delivered.

    Delivery is at least once (after a crash between a receiver's work and the record of it, a
    relay delivers the event to that receiver again); wrap a receiver whose effect must not repeat.
    It is connected under the wrapped receiver's name (see :func:`receiver_name`). By default the ids seen are kept in
    memory, in a thread-safe LRU of ``capacity`` ids: that de-duplicates within one process. For
    de-duplication across processes and restarts pass ``claim``, a persistent check-and-set that
    returns True only the first time it sees an id (Redis ``SET key 1 NX EX ...``, an INSERT into a
    table with a unique key), and ``release`` to undo a claim when the receiver fails, so that the
    retry reaches it. Without ``release``, an event whose receiver failed after the claim is never
    handled by this receiver again.

    An id is claimed before the receiver runs, so two concurrent deliveries of one event never
    both reach it; when the receiver raises, the claim is released and the error propagates (the
    outbox then retries the event for this receiver).
    """

    def __init__(self, receiver: Receiver, *, capacity: int = 100_000,
                 claim: Callable[[str], bool] | None = None,
                 release: Callable[[str], None] | None = None) -> None:
        if capacity < 1:
            raise InvalidArgument(f"capacity must be at least 1, got {capacity}")
        if release is not None and claim is None:
            raise InvalidArgument("release is only meaningful with claim")
        self.__wrapped__ = receiver  # receiver_name() names a Deduplicator after the receiver it wraps
        if is_coroutine_receiver(receiver):
            receiver = LoopReceiver(receiver)  # type: ignore[arg-type]
        self.receiver = receiver
        self.capacity = capacity
        self._claim = claim
        self._release = release
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest id comes first
        self._lock = threading.Lock()
        self.dropped = 0
        """How many deliveries were dropped as repeats."""

    def __call__(self, event: BroadcastEvent) -> None:
        """Pass ``event`` to the receiver unless its ``event_id`` was seen before."""
        if not self.claim(event.event_id):
            with self._lock:
                self.dropped += 1
            logger.debug("dropped repeated event %s %s", event.name, event.event_id)
            return
        try:
            self.receiver(event)
        except BaseException:
            self.forget(event.event_id)
            raise

    def __repr__(self) -> str:
        return f"Deduplicator({getattr(self.receiver, '__qualname__', repr(self.receiver))})"

    def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is claimed (and records it), False afterwards."""
        if self._claim is not None:
            return self._claim(event_id)
        with self._lock:
            if event_id in self._seen:
                del self._seen[event_id]  # re-insert: the most recently seen ids are kept longest
                self._seen[event_id] = None
                return False
            self._seen[event_id] = None
            if len(self._seen) > self.capacity:
                del self._seen[next(iter(self._seen))]
            return True

    def forget(self, event_id: str) -> None:
        """Undo the claim of ``event_id`` (its next delivery reaches the receiver again)."""
        if self._claim is not None:
            if self._release is not None:
                self._release(event_id)
            return
        with self._lock:
            self._seen.pop(event_id, None)
