"""A pytest plugin (registered as an entry point, so pytest loads it by itself): the store contract's
assertions are rewritten like a test's, so a failing contract test shows the values it compared
instead of a bare ``AssertionError``."""

from __future__ import annotations

import pkgutil

import pytest

import broadcast_lifecycle

pytest.register_assert_rewrite(*(
    f"broadcast_lifecycle.{module.name}" for module in pkgutil.iter_modules(broadcast_lifecycle.__path__)
    if module.name.startswith("contract")
))
