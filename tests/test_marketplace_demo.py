"""`make demo` (examples/demo.py) runs the marketplace app with real Socket.IO clients, prints who
received what, and exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_output() -> str:
    """The demo's stdout (it must exit 0)."""
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], check=False, capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, f"demo exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def received_by(output: str) -> dict[str, list[tuple[str, str, str]]]:
    """The final section as ``{"transporter t-1": [(event, booking id, status), ...]}``."""
    section = output.split("== what each client received", 1)[1]
    received: dict[str, list[tuple[str, str, str]]] = {}
    user = ""
    for line in section.splitlines()[1:]:
        if not line.startswith(" "):
            user = line.split(" (", 1)[0]
            received[user] = []
        elif line.strip():
            name, _, booking, status, *_ = line.split()
            received[user].append((name, booking, status))
    return received


def test_demo_steps_show_the_answers_and_the_events(demo_output: str) -> None:
    """Each step prints the HTTP answer, then what each client received because of it."""
    steps = demo_output.split("\n* ")[1:]
    for expected in (
        r"^t-2 accepts booking 1: 200 fully_filled v5\n(.*\n)*    transporter t-3 +<- BOOKING_FULLY_FILLED +booking 1 ",
        r"^t-3 accepts booking 1, too late: 409 InvalidTransition: accept is not allowed from fully_filled",
        r"^c-1 retries the first request .*: 200 fully_filled v5\n*$",
        r'^c-1 cancels booking 2: 200 cancelled v4\n(.*\n)*.*transporter t-2 +<- BOOKING_CANCELLED .*"found another',
        r"^the app's sweeper expires booking 3\n(.*\n)*    transporter t-1 +<- BOOKING_EXPIRED +booking 3 ",
    ):
        assert any(re.search(expected, step) for step in steps), expected


def test_demo_each_client_got_its_events(demo_output: str) -> None:
    """The customer heard every transition of its three bookings; every transporter offered them heard each
    booking's offer and its end (filled, cancelled, expired), and nothing twice; t-4 (a truck) heard nothing."""
    received = received_by(demo_output)
    assert set(received) == {"customer c-1", "transporter t-1", "transporter t-2", "transporter t-3",
                             "transporter t-4"}
    assert received["transporter t-4"] == []  # connected all along, a truck: offered none of these van bookings
    customer = received["customer c-1"]
    assert [(b, s) for n, b, s in customer if n == "BROADCAST_STATE_CHANGED"] == [
        ("1", "created"), ("1", "broadcasting"), ("1", "active"), ("1", "partially_filled"), ("1", "fully_filled"),
        ("2", "created"), ("2", "broadcasting"), ("2", "active"), ("2", "cancelled"),
        ("3", "created"), ("3", "broadcasting"), ("3", "active"), ("3", "expired")]
    for transporter in ("t-1", "t-2", "t-3"):
        closing = [(n, b) for n, b, _ in received[f"transporter {transporter}"] if not n.endswith("_OFFERED")]
        assert closing == [("BOOKING_FULLY_FILLED", "1"), ("BOOKING_CANCELLED", "2"), ("BOOKING_EXPIRED", "3")]
        offered = {b for n, b, _ in received[f"transporter {transporter}"] if n.endswith("_OFFERED")}
        assert offered == {"1", "2", "3"}


def test_serve_prints_working_links(tmp_path: Path) -> None:
    """`make serve`'s program migrates, prints a link per demo user and serves the page and the API
    those links' tokens open; Ctrl-C (SIGINT) stops it cleanly."""
    env = {**os.environ, "PORT": "0", "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}", "PYTHONPATH": "examples"}
    process = subprocess.Popen([sys.executable, "-m", "marketplace", "serve"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # the last line is printed just before uvicorn serves the bound socket
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        links = dict(re.findall(r"^  (customer c-1|transporter t-1) +(http://\S+)", "".join(lines), re.MULTILINE))
        base, _, token = links["transporter t-1"].partition("/?token=")
        with urllib.request.urlopen(f"{base}/", timeout=30) as page:
            assert b'id="transporter-view"' in page.read()
        request = urllib.request.Request(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as me:
            assert json.load(me) == {"id": "t-1", "role": "transporter"}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    """`make serve` on a port another program listens on exits non-zero with one line naming the port
    and PORT=, no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
               "PYTHONPATH": "examples"}
        result = subprocess.run([sys.executable, "-m", "marketplace", "serve"], cwd=ROOT, env=env, text=True,
                                capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"port {port} is in use on 127.0.0.1; set PORT=")
    assert "Traceback" not in result.stderr and result.stdout == ""
