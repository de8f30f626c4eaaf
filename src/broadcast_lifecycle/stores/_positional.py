"""Statements of the general write path run with their values in a declared order.

The statements are written once, with ``:name`` parameters (:mod:`.sql.common`). Given a dict,
sqlite3 decodes each parameter's name and looks it up, about 0.1 us a parameter: a few
microseconds on every command, on the statements every command runs. :class:`Positional` runs such
a statement with a tuple in a declared order instead: on SQLite as numbered ``?N`` parameters, which
sqlite3 binds by position; on PostgreSQL (whose statement is rendered with ``%(name)s``) as the dict
of those names, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect

from ._sql_text import LibrarySql

__all__ = ["HISTORY", "HOLD", "LOAD", "RECIPIENT", "UPDATE", "Positional", "WrittenSql"]

_NAMED = re.compile(r"(?<![:\w]):(\w+)")
_PYFORMAT = re.compile(r"%\((\w+)\)s")


class Positional:
    """``statement`` (as :func:`._sql_text.render` made it for ``dialect``) taking its values in the
    order ``names``; run it with ``cur.execute(p.text, p.params(values))``.

    A name may be missing from the statement (``kind`` where a host's table has no kind column), but
    every parameter of the statement must be named, and on SQLite the last name must be used: sqlite3
    counts a statement's parameters up to the highest number it uses.
    """

    __slots__ = ("_sqlite", "names", "text")

    def __init__(self, statement: str, names: Sequence[str], dialect: Dialect) -> None:
        self.names = tuple(names)
        self._sqlite = dialect.name == "sqlite"
        used = (_NAMED if self._sqlite else _PYFORMAT).findall(statement)
        if unknown := sorted(set(used) - set(self.names)):
            raise ValueError(f"parameters {', '.join(unknown)} are not in the declared order {self.names}")
        if self._sqlite and self.names[-1] not in used:
            raise ValueError(f"the last declared parameter, {self.names[-1]}, is not in the statement")
        self.text = _NAMED.sub(lambda m: f"?{self.names.index(m[1]) + 1}", statement) if self._sqlite else statement

    def params(self, values: tuple[Any, ...]) -> Any:
        """``values`` (in :attr:`names` order) as the driver takes them for :attr:`text`."""
        return values if self._sqlite else dict(zip(self.names, values, strict=True))


LOAD = ("kind", "key", "transporter", "id")
"""The order of ``EntitySql.load``'s values."""
UPDATE = ("to_status", "at", "new_version", "delta", "expires_at", "id", "kind", "version")
"""The order of ``EntitySql.update``'s values (``kind`` only where the table has a kind column)."""
HISTORY = ("kind", "key", "from_status", "to_status", "trigger", "actor", "reason", "meta", "at", "version")
"""The order of ``LibrarySql.add_history``'s values."""
HOLD = ("delta", "response", "at", "kind", "key", "transporter")
"""The order of ``LibrarySql.hold``'s values."""
RECIPIENT = ("kind", "key", "transporter", "at")
"""The order of ``LibrarySql.add_recipient``'s values."""


class WrittenSql:
    """The general write path's statements on the library's tables, in the orders above."""

    __slots__ = ("history", "hold", "recipient")

    def __init__(self, lib: LibrarySql, dialect: Dialect) -> None:
        self.history = Positional(lib.add_history, HISTORY, dialect)
        self.hold = Positional(lib.hold, HOLD, dialect)
        self.recipient = Positional(lib.add_recipient, RECIPIENT, dialect)
