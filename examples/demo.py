"""``make demo``: runs the example marketplace app's scripted scenario (``examples/marketplace/demo.py``).

The app starts on a temporary SQLite file under uvicorn on a free loopback port; one customer and
three transporters connect as python-socketio clients; a booking is filled by two accepts, one is
cancelled, one is left to expire; each client's events are printed as they arrive.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from marketplace.demo import main  # the path above makes the example package importable

if __name__ == "__main__":
    sys.exit(main())
