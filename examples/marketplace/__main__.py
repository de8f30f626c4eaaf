"""``python -m marketplace demo|serve|migrate`` (from ``examples/``, or with it on ``PYTHONPATH``)."""

from __future__ import annotations

import sys

USAGE = "usage: python -m marketplace demo|serve|migrate"


def main(argv: list[str]) -> int:
    """Run the command ``argv`` names."""
    command = argv[0] if argv else ""
    if command == "demo":
        from .demo import main as demo

        return demo()
    if command == "serve":
        from .serve import main as serve

        return serve()
    if command == "migrate":
        from .db import migrate
        from .settings import Settings

        migrate(Settings.from_env().database_url)
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
