"""The contract suite defines a correct store: it fails on every deliberately wrong store, in the
test that guards the broken invariant, and passes the reference store through the same runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from wrong_stores import WRONG_STORES, HandSweeper, MissingClaimAndDead, WrongStore

from broadcast_lifecycle.stores import BroadcastStore, InMemoryStore
from broadcast_lifecycle.testing import StoreContract, run_contract

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "adapters.md"


def _contract_for(store_class: type[WrongStore] | type[MissingClaimAndDead] | type[InMemoryStore],
                  ) -> type[StoreContract]:
    """A contract test class whose make_store builds ``store_class``."""

    class Contract(StoreContract):
        def make_store(self) -> BroadcastStore:
            return store_class()  # one lacks methods on purpose: the contract must say so

    Contract.__name__ = f"TestContractOn{store_class.__name__}"
    return Contract


@pytest.mark.parametrize("wrong", WRONG_STORES, ids=lambda store: store.__name__)
def test_contract_fails_on_wrong_store(wrong: type[WrongStore] | type[MissingClaimAndDead]) -> None:
    """The whole contract, run on a store with one planted bug, fails in the test guarding that invariant."""
    failures = run_contract(_contract_for(wrong))
    assert wrong.caught_by in failures, (
        f"{wrong.__name__} ({wrong.__doc__}) passed {wrong.caught_by}; it failed {sorted(failures) or 'nothing'}")


@pytest.mark.parametrize("store_class", [InMemoryStore, HandSweeper], ids=lambda store: store.__name__)
def test_correct_stores_pass_the_same_runner(store_class: type[InMemoryStore]) -> None:
    """The reference store, and the hand-written sweeper the sweep bugs are planted in, pass every test
    of the contract through the runner that fails the wrong stores."""
    failures = run_contract(_contract_for(store_class))
    assert failures == {}, {name: repr(exc) for name, exc in failures.items()}


def test_the_wrong_stores_cover_the_contract() -> None:
    """At least fifteen wrong stores, each named after its bug, each aimed at an existing contract test;
    the guide gives their number."""
    assert len(WRONG_STORES) >= 15
    assert len({store.__name__ for store in WRONG_STORES}) == len(WRONG_STORES)
    tests = {name for name in dir(StoreContract) if name.startswith("test_")}
    assert {store.caught_by for store in WRONG_STORES} <= tests
    assert f"on {len(WRONG_STORES)} deliberately wrong stores" in GUIDE.read_text(encoding="utf-8")
