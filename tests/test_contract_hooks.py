"""The contract's set-up and tear-down hooks: every store a test makes is released after it, passed
or failed, under pytest and under run_contract."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from wrong_stores import HistoryDropsMetadata

from broadcast_lifecycle.stores import BroadcastStore, InMemoryStore
from broadcast_lifecycle.testing import StoreContract, run_contract

_COUNTED_STORE = '''
class CountedStore({base}):
    """Counts the stores made and closed in ``log``."""

    def __init__(self, log):
        super().__init__()
        self._log = log
        log.append("open")

    def close(self):
        self._log.append("close")
'''


def test_run_contract_releases_every_store() -> None:
    """run_contract calls release_store (by default the store's close()) once for every store a test
    made, in tests that pass and in tests that fail."""
    log: list[str] = []
    namespace: dict[str, object] = {"InMemoryStore": InMemoryStore, "HistoryDropsMetadata": HistoryDropsMetadata}
    for base in ("InMemoryStore", "HistoryDropsMetadata"):
        exec(_COUNTED_STORE.format(base=base), namespace)  # a store class per base, each counting in ``log``
        counted = namespace["CountedStore"]

        class Contract(StoreContract):
            def make_store(self, counted: object = counted) -> BroadcastStore:
                return counted(log)  # type: ignore[operator, no-any-return]

        failures = run_contract(Contract)
        assert bool(failures) is (base == "HistoryDropsMetadata")
    assert log.count("open") >= 2 * len([n for n in dir(StoreContract) if n.startswith("test_")])
    assert log.count("close") == log.count("open")


def test_pytest_runs_the_hooks_around_each_test(tmp_path: Path) -> None:
    """Under pytest, a StoreContract subclass releases each store it made after each test, failed or not."""
    log = tmp_path / "log.txt"
    module = tmp_path / "test_counted_contract.py"
    module.write_text(textwrap.dedent(f'''
        from broadcast_lifecycle.stores import InMemoryStore
        from broadcast_lifecycle.testing import StoreContract

        LOG = {str(log)!r}

        class Counted(InMemoryStore):
            def __init__(self):
                super().__init__()
                with open(LOG, "a") as f:
                    f.write("open\\n")

            def close(self):
                with open(LOG, "a") as f:
                    f.write("close\\n")

        class TestCounted(StoreContract):
            def make_store(self):
                return Counted()

            def test_fails_after_making_a_store(self):
                self.new_store()
                raise AssertionError("planted failure")
    '''), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module),
                             "-k", "keeps_every_field or fails_after or same_records"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert "1 failed, 2 passed" in result.stdout, result.stdout + result.stderr
    lines = log.read_text().split()
    assert lines.count("open") == 3 and lines.count("close") == 3, lines
