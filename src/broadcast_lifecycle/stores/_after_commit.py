"""Deferring work until a host's SQLAlchemy session commits (and dropping it if it rolls back)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from .base import AfterCommit, Committed

__all__ = ["defer_until_commit"]

logger = logging.getLogger(__name__)

_PENDING = "broadcast_lifecycle.pending"


def defer_until_commit(session: Session, callback: AfterCommit, committed: Committed) -> None:
    """Call ``callback(committed)`` after ``session`` commits; forget it if the session rolls back."""
    pending: list[tuple[AfterCommit, Committed]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        if not event.contains(session, "after_commit", _run_pending):
            event.listen(session, "after_commit", _run_pending)
            event.listen(session, "after_rollback", _drop_pending)
    pending.append((callback, committed))


def _run_pending(session: Session) -> None:
    pending: list[tuple[AfterCommit, Committed]] = session.info.pop(_PENDING, [])
    for callback, committed in pending:
        try:
            callback(committed)
        except Exception:
            # The transition is committed and its events are in the outbox: the relay delivers them.
            logger.exception("dispatch after commit failed; the outbox keeps the events")


def _drop_pending(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING, None)
