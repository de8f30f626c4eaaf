"""Keeping the host's ORM instance current after a command joined its ``Session``.

The store writes on the session's connection without the ORM, so an instance of the broadcast that
the session already holds would show the old state until the host refreshed it. After each joined
write the lifecycle columns of that instance (if loaded) are set to what was written, as committed
values: the instance shows the new state and the session sees nothing to flush.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ..records import BroadcastSnapshot

__all__ = ["ModelSync"]

_COLUMNS = ("status", "version", "state_changed_at", "slots_filled", "expires_at")


class ModelSync:
    """Sets a loaded host instance's lifecycle attributes after a write joined to its session."""

    def __init__(self, model: type[Any], *, naive_times: bool = False) -> None:
        mapper: Mapper[Any] = inspect(model)
        self._model = model
        self._naive = naive_times  # SQLite loads DateTime(timezone=True) as naive UTC: match what a load gives
        self._attributes = {name: mapper.get_property_by_column(mapper.local_table.c[name]).key
                            for name in _COLUMNS}

    def apply(self, session: Session, snapshot: BroadcastSnapshot) -> None:
        """Update ``session``'s instance of the broadcast, if it holds one, to ``snapshot``."""
        instance = session.identity_map.get(identity_key(self._model, snapshot.id))
        if instance is None:
            return
        values = {"status": snapshot.status.value, "version": snapshot.version,
                  "state_changed_at": self._time(snapshot.state_changed_at), "slots_filled": snapshot.slots_filled,
                  "expires_at": self._time(snapshot.expires_at)}
        for column, attribute in self._attributes.items():
            set_committed_value(instance, attribute, values[column])

    def _time(self, value: datetime | None) -> datetime | None:
        if value is None or not self._naive:
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)
