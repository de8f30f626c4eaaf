"""Turning the command line's options into a lifecycle and receivers, with usage errors that say what to do."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from datetime import timedelta
from typing import Any, cast

from .bus import Receiver
from .records import EntityId
from .service import BroadcastLifecycle

__all__ = ["ENV_DATABASE_URL", "UsageError", "describe", "duration", "entity_id", "lifecycle_from", "receiver"]

ENV_DATABASE_URL = "BROADCAST_LIFECYCLE_DATABASE_URL"
"""The environment variable ``--database-url`` defaults to."""


class UsageError(Exception):
    """A problem with the command line or the configuration it names (exit 2)."""


def lifecycle_from(args: argparse.Namespace) -> BroadcastLifecycle:
    """The lifecycle ``--lifecycle`` names, or one on the store at ``--database-url`` (or its variable)."""
    if args.lifecycle:
        if args.create_tables:
            raise UsageError("--create-tables works with --database-url only; with --lifecycle, create the "
                             "tables with the host's migrations")
        found = _import(args.lifecycle, "--lifecycle")
        lc = found
        if callable(found) and not isinstance(found, BroadcastLifecycle):
            try:
                lc = found()
            except Exception as exc:
                raise UsageError(f"--lifecycle {args.lifecycle}: calling it failed: {describe(exc)}") from exc
        if not isinstance(lc, BroadcastLifecycle):
            raise UsageError(f"--lifecycle {args.lifecycle} is not a BroadcastLifecycle (nor a function "
                             f"returning one): got {type(lc).__name__}")
        return lc
    url: str | None = args.database_url or os.environ.get(ENV_DATABASE_URL)
    if not url:
        raise UsageError(f"no database: pass --database-url URL or set ${ENV_DATABASE_URL} "
                         "(e.g. sqlite:///broadcasts.db, postgresql+psycopg://user@host/db)")
    from .stores.sqlalchemy import SQLAlchemyStore

    try:
        store = SQLAlchemyStore.from_url(url)
    except Exception as exc:
        raise UsageError(f"cannot use database URL {_safe_url(url)!r}: {describe(exc)}") from exc
    if args.create_tables:
        try:
            store.create_all()
        except Exception as exc:
            raise UsageError(f"cannot create the tables in {_safe_url(url)!r}: {describe(exc)}") from exc
    return BroadcastLifecycle(store)


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    """An argparse type: ``7d``, ``12h``, ``30m``, ``90s``, ``2w`` (or a sum: ``1d12h``) as a positive timedelta."""
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not parts or "".join(number + unit for number, unit in parts) != spec:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 7d, 12h or 30m (units s, m, h, d, w), got {text!r}")
    value = sum((timedelta(**{_UNITS[unit]: int(number)}) for number, unit in parts), timedelta())
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {text!r}")
    return value


def receiver(spec: str) -> Receiver:
    """The callable ``--receiver module:attribute`` names."""
    found = _import(spec, "--receiver")
    if not callable(found):
        raise UsageError(f"--receiver {spec} is not callable (got {type(found).__name__}); it must be a "
                         "function or object that takes a BroadcastEvent")
    return cast(Receiver, found)


def _import(spec: str, option: str) -> Any:
    """The object ``module:attribute`` (attribute may be dotted), importable from the current directory."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{option} must look like module:attribute (e.g. myapp.sockets:publish), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{option} {spec}: cannot import {module_name}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"{option} {spec}: {module_name} has no attribute {attribute}") from None
    return found


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, with a hint when the tables are missing."""
    text = f"{type(exc).__name__}: {exc}".strip()
    if "no such table" in text or "does not exist" in text:
        text += " (create the tables with --create-tables or migrate the database)"
    return text


def entity_id(lc: BroadcastLifecycle, kind: str, text: str) -> EntityId:
    """``text`` (an id typed on the command line) as the key type of ``kind``'s table."""
    from .stores.sqlalchemy import SQLAlchemyStore

    if not isinstance(lc.store, SQLAlchemyStore):
        return text
    try:
        return lc.store.parse_entity_id(kind, text)
    except ValueError:
        raise UsageError(f"ID must be a key of {kind}'s table ({lc.store.id_type(kind).__name__}), got {text!r}") \
            from None
