"""Per-kind settings: names of ids and events, default deadline, policies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from .errors import InvalidArgument, show_value
from .events import EventPayload, Topic

__all__ = ["DEFAULT_KINDS", "KindConfig"]


@dataclass(frozen=True)
class KindConfig:
    """How one kind of broadcast (``booking``, ``order``, ...) is named and governed.

    ``id_field`` is the payload key of the id (``bookingId``), besides ``entityId``; events are named
    ``{event_prefix}_{TOPIC}`` (``BOOKING_EXPIRED``, ``BOOKING_OFFERED``) unless ``event_names``
    overrides a topic.
    """

    name: str
    id_field: str = ""
    event_prefix: str = ""
    default_ttl: timedelta | None = None
    allow_partial_trip: bool = False
    one_open_per_customer: bool = False
    event_names: Mapping[Topic, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise InvalidArgument(f"kind name must be an identifier, got {self.name!r}")
        if self.default_ttl is not None and self.default_ttl <= timedelta(0):
            raise InvalidArgument(f"default_ttl of {self.name} must be positive, got {show_value(self.default_ttl)}")
        if not self.id_field:
            object.__setattr__(self, "id_field", f"{self.name}Id")
        if self.id_field in EventPayload.__annotations__:
            raise InvalidArgument(f"id_field of {self.name} must not be a payload key, got {self.id_field!r}; "
                                  f"taken: {', '.join(EventPayload.__annotations__)}")
        if not self.event_prefix:
            object.__setattr__(self, "event_prefix", self.name.upper())

    def event_name(self, topic: Topic) -> str:
        """The wire name of ``topic`` for this kind."""
        return self._wire_names[topic]

    @cached_property
    def _wire_names(self) -> dict[Topic, str]:
        """Every topic's wire name, worked out once: :meth:`event_name` runs for every event written."""
        default = {topic: f"{self.event_prefix}_{topic.name}" for topic in Topic}
        default[Topic.STATE_CHANGED] = "BROADCAST_STATE_CHANGED"
        return {topic: self.event_names.get(topic, name) for topic, name in default.items()}


DEFAULT_KINDS: tuple[KindConfig, ...] = (KindConfig("booking"), KindConfig("order"))
"""The kinds a lifecycle knows when none are given."""
