"""``python -m broadcast_lifecycle``: the command line (see :mod:`broadcast_lifecycle.cli`)."""

from broadcast_lifecycle.cli import main

raise SystemExit(main())
