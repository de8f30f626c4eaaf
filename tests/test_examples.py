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


def events_per_user(output: str) -> dict[str, list[tuple[str, str]]]:
    """Parse the demo's per-user section into ``{"transporter T2": [(booking, event name), ...]}``."""
    section = output.split("== events received", 1)[1].split("\n\n", 1)[0]
    received: dict[str, list[tuple[str, str]]] = {}
    user = ""
    for line in section.splitlines()[1:]:
        if not line.startswith(" "):
            user = line.strip()
            received[user] = []
        elif line.strip():
            _, booking, name, *_ = line.split()
            received[user].append((booking, name))
    return received


def test_quickstart_runs() -> None:
    """The quickstart fills the booking, prints a refusal and the history."""
    out = run_example("quickstart.py")
    for recipient in ("customer:c-1", "transporter:t-1", "transporter:t-2", "transporter:t-3"):
        assert f"BOOKING_FULLY_FILLED to {recipient}: fully_filled v5 (accept)" in out
    assert "BOOKING_OFFERED to transporter:t-3: broadcasting v2 (start_broadcast)" in out
    assert "\nfully_filled\n" in out
    assert "refused: accept is not allowed from fully_filled" in out
    assert "v5 partially_filled -> fully_filled (accept, actor t-2)" in out


def test_demo_timeline() -> None:
    """The demo's timeline shows the fill, the trip, the cancellation, the expiry and the refusals."""
    out = run_example("demo.py")
    timeline = out.split("== events received", 1)[0]
    for transition in (
        r"A\s+partially_filled -> fully_filled\s+accept\s+by T2",
        r"A\s+fully_filled -> in_progress\s+start_trip",
        r"A\s+in_progress -> completed\s+complete",
        r"B\s+partially_filled -> cancelled\s+cancel\s+by bob",
        r"C\s+active -> expired\s+expire\s+by system",
        r"C\s+expire_due\(\) expired 1 booking",
        r"B\s+REFUSED accept by T9: transporter T9 was not notified",
        r"C\s+REFUSED accept by T4: accept is not allowed from expired",
    ):
        assert re.search(transition, timeline), transition


def test_demo_is_deterministic() -> None:
    """Two runs print the same output once event ids are masked."""
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    first, second = (uuid.sub("<id>", run_example("demo.py")) for _ in range(2))
    assert first == second


def test_demo_recipients() -> None:
    """Every transporter of booking B got BOOKING_CANCELLED; uninvolved users got nothing of B."""
    received = events_per_user(run_example("demo.py"))
    for transporter in ("T2", "T3", "T4"):
        assert ("B", "BOOKING_CANCELLED") in received[f"transporter {transporter}"]
    assert ("B", "BOOKING_CANCELLED") in received["customer bob"]
    assert all(booking != "B" for booking, _ in received["transporter T1"] + received["customer alice"])
    assert ("C", "BOOKING_EXPIRED") in received["transporter T1"]
    assert [name for _, name in received["transporter T2"]].count("BOOKING_FULLY_FILLED") == 1


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
