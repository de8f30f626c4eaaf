"""The examples run as written, and the README shows the quickstart and the set-up commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"


def run_example(name: str) -> str:
    """Run ``examples/<name>`` with this interpreter; return its stdout, failing on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def test_quickstart_runs() -> None:
    """The quickstart fills the booking, prints a refusal and the history."""
    out = run_example("quickstart.py")
    for recipient in ("customer:c-1", "transporter:t-1", "transporter:t-2", "transporter:t-3"):
        assert f"BOOKING_FULLY_FILLED to {recipient}: fully_filled v5 (accept)" in out
    assert "BOOKING_OFFERED to transporter:t-3: broadcasting v2 (start_broadcast)" in out
    assert "\nfully_filled\n" in out
    assert "refused: accept is not allowed from fully_filled" in out
    assert "v5 partially_filled -> fully_filled (accept, actor t-2)" in out


def test_readme_quickstart_is_the_example() -> None:
    """The README's first python block is byte-identical to examples/quickstart.py."""
    readme = README.read_text(encoding="utf-8")
    match = re.search(r"^```python\n(.*?)^```$", readme, re.DOTALL | re.MULTILINE)
    assert match is not None, "README.md has no ```python block"
    assert match.group(1) == (EXAMPLES / "quickstart.py").read_text(encoding="utf-8")


def test_readme_first_screen_has_setup_commands() -> None:
    """The README's first 40 lines show `make demo` and `make test`."""
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    assert "make demo" in first_screen
    assert "make test" in first_screen


def test_async_quickstart_runs() -> None:
    """The async quickstart fills the booking with two of three racing tasks and prints the events."""
    out = run_example("async_quickstart.py")
    assert "BOOKING_FULLY_FILLED to [customer:c-1, transporter:t-1, transporter:t-2, transporter:t-3] v5" in out
    assert out.count("accepted:") == 2
    assert "refused: accept is not allowed from fully_filled" in out
    assert out.endswith("fully_filled\n")


def test_readme_async_quickstart_is_the_example() -> None:
    """The README's python block under "Async quickstart" is byte-identical to examples/async_quickstart.py."""
    readme = README.read_text(encoding="utf-8")
    match = re.search(r"^## Async quickstart\n.*?^```python\n(.*?)^```$", readme, re.DOTALL | re.MULTILINE)
    assert match is not None, "README.md has no async quickstart block"
    assert match.group(1) == (EXAMPLES / "async_quickstart.py").read_text(encoding="utf-8")
