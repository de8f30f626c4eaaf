"""The core (states, table, guards, decide, events, records, errors, kinds, clock, expiry, codec) does no I/O.

Each check runs in a fresh interpreter, so modules imported by other tests cannot hide a leak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import broadcast_lifecycle

CORE_MODULES = (
    "states",
    "lifecycle",
    "guards",
    "decision",
    "events",
    "records",
    "errors",
    "kinds",
    "clock",
    "expiry",
    "codec",
    "command",
)
FORBIDDEN_PREFIXES = (
    "blinker",
    "sqlalchemy",
    "broadcast_lifecycle.stores",
    "broadcast_lifecycle.bus",
    "broadcast_lifecycle.service",
)

_REPORT = """
import json, sys
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"blinker", "sqlalchemy", "broadcast_lifecycle"})))
"""

_PLAIN_IMPORT = """
import importlib
for name in {modules!r}:
    importlib.import_module("broadcast_lifecycle." + name)
"""

# Registers the package without running its ``__init__``, then imports the core modules: this
# isolates what the core modules themselves import from what the package re-exports.
_BYPASS_INIT = """
import importlib, importlib.util, sys, types
package = types.ModuleType("broadcast_lifecycle")
package.__path__ = [{package_dir!r}]
package.__spec__ = importlib.util.spec_from_loader("broadcast_lifecycle", loader=None, is_package=True)
sys.modules["broadcast_lifecycle"] = package
for name in {modules!r}:
    importlib.import_module("broadcast_lifecycle." + name)
"""


def _loaded_after(script: str) -> list[str]:
    """Run ``script`` in a fresh interpreter and return the relevant modules it left loaded."""
    result = subprocess.run(
        [sys.executable, "-c", script + _REPORT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return modules


def _forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in FORBIDDEN_PREFIXES)]


def test_core_modules_import_no_io_dependencies() -> None:
    """The core modules' own imports pull in neither blinker, SQLAlchemy, the stores, the bus nor the service."""
    package_dir = str(Path(broadcast_lifecycle.__file__).parent)
    loaded = _loaded_after(_BYPASS_INIT.format(package_dir=package_dir, modules=CORE_MODULES))
    assert {f"broadcast_lifecycle.{name}" for name in CORE_MODULES} <= set(loaded)
    assert _forbidden(loaded) == []


def test_importing_the_core_through_the_package_stays_pure() -> None:
    """Importing the core modules through the package loads no blinker, SQLAlchemy, store, bus or service."""
    loaded = _loaded_after(_PLAIN_IMPORT.format(modules=CORE_MODULES))
    assert {f"broadcast_lifecycle.{name}" for name in CORE_MODULES} <= set(loaded)
    assert _forbidden(loaded) == []


def test_the_check_detects_a_leak() -> None:
    """The forbidden-module filter flags blinker and the service, and lets the core through."""
    assert _forbidden(["blinker", "blinker.base", "broadcast_lifecycle.service", "broadcast_lifecycle.states"]) == [
        "blinker",
        "blinker.base",
        "broadcast_lifecycle.service",
    ]
