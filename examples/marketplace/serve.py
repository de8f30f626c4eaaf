"""``make serve``: the app for a person with a browser, with demo transporters and a link per demo user.

The database is ``DATABASE_URL`` (default: ``marketplace.db`` in the system's temp directory); the
port is ``PORT`` (default 8000), on loopback unless ``HOST`` says otherwise. Tokens are signed with
``MARKETPLACE_SECRET``, or a key drawn at start-up (the links then work until the app stops).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys

import uvicorn

from .app import create_app
from .db import migrate, seed_transporters
from .fixtures import CUSTOMERS, TRANSPORTERS, demo_transporters, token_for
from .server import free_socket
from .settings import Settings

__all__ = ["main"]


def main() -> int:
    """Migrate, seed the demo transporters, print the links, serve until Ctrl-C."""
    settings = Settings.from_env()
    sock = _listen()
    if sock is None:
        return 2
    host = sock.getsockname()[0]
    migrate(settings.database_url)
    seed_transporters(settings.database_url, demo_transporters())
    url = f"http://{host}:{sock.getsockname()[1]}"
    print(f"Marketplace on {settings.database_url}, serving at {url}\n")
    print("Open one link per browser window (each is signed in as that user):")
    for customer in CUSTOMERS:
        print(f"  customer {customer:<5} {url}/?token={token_for(customer, 'customer', settings.secret)}")
    for tid, name, vehicle, *_ in TRANSPORTERS:
        print(f"  transporter {tid:<3} {url}/?token={token_for(tid, 'transporter', settings.secret)}"
              f"  ({name}, {vehicle})")
    print("\nAs a customer, broadcast a booking of vans: it appears live in the windows of t-1, t-2 and t-3 "
          "(t-4 drives a truck, t-9 is in Munich).\nAccept it there, cancel it, or let it expire "
          f"(open for {settings.offer_ttl.total_seconds():g} s; MARKETPLACE_OFFER_TTL sets it). Ctrl-C stops.\n",
          flush=True)
    config = uvicorn.Config(create_app(settings), log_level="warning", ws="websockets-sansio")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        uvicorn.Server(config).run(sockets=[sock])
    print("Stopped.")
    return 0


def _listen() -> socket.socket | None:
    """The socket to serve on, from ``HOST`` and ``PORT``; ``None`` (after saying why on stderr) when
    the port is taken or not a port."""
    host, text = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    if not text.isdigit() or int(text) > 65535:
        print(f"PORT must be a port number from 0 to 65535 (0: any free port), got {text!r}", file=sys.stderr)
        return None
    try:
        return free_socket(host, int(text))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"port {text} is in use on {host}; set PORT=... to another port (PORT=0: any free one), "
              f"e.g. PORT={int(text) + 1} make serve", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
