"""The worked example of docs/adapters.md, a store on the standard library's sqlite3, passes the whole
store contract on a real SQLite file and stays short enough to read in one sitting."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from sqlite3_store import Sqlite3Store

from broadcast_lifecycle.stores import BroadcastStore
from broadcast_lifecycle.testing import StoreContract

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sqlite3_store.py"


class TestSqlite3Store(StoreContract):
    """The example store, a new database file for every store a test makes."""

    keeps_delivered_events = False  # it deletes an event once delivered

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.numbers = itertools.count()

    def make_store(self) -> BroadcastStore:
        return Sqlite3Store(str(self.directory / f"store-{next(self.numbers)}.db"))


def test_example_store_is_short() -> None:
    """The example store is 300 lines at most (issue 13: short enough to read in one sitting), counting everything."""
    assert len(EXAMPLE.read_text(encoding="utf-8").splitlines()) <= 300


def test_the_guide_quotes_the_example_verbatim() -> None:
    """Every excerpt docs/adapters.md marks as taken from the example is in the example, line for line."""
    from test_docs import python_blocks

    example = EXAMPLE.read_text(encoding="utf-8")
    marker = "# fragment: from examples/sqlite3_store.py\n"
    excerpts = [b for b in python_blocks(EXAMPLE.parent.parent / "docs" / "adapters.md") if b.code.startswith(marker)]
    assert len(excerpts) >= 5
    for block in excerpts:
        assert block.code[len(marker):] in example, f"docs/adapters.md:{block.line} is not in {EXAMPLE.name}"
