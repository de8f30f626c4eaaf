"""The shipped pytest plugin: a failing contract test in a store author's suite shows the values compared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

AUTHORS_TEST = '''
from broadcast_lifecycle import InMemoryStore
from broadcast_lifecycle.testing import StoreContract


class NewestFirst(InMemoryStore):
    def pending_events(self, limit, created_before=None):
        return list(reversed(super().pending_events(limit, created_before)))


class TestNewestFirst(StoreContract):
    def make_store(self):
        return NewestFirst()
'''


def test_contract_failures_show_what_was_compared(tmp_path: Path) -> None:
    """A store listing pending events newest first fails with the compared values, not a bare AssertionError."""
    (tmp_path / "test_authors_store.py").write_text(AUTHORS_TEST, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "oldest_first",
                          str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "At index 0 diff: datetime.datetime(" in run.stdout
