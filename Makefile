# The two commands the README promises on a fresh clone:
#   make demo   set up, then a simulated phone call on the built-in local agent (no keys)
#   make test   set up everything the tests need (browser and JS client too), then run them
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test check setup setup-test bench

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

# The softphone page's Socket.IO client comes from the npm registry, not a CDN.
setup: $(VENV)/.base node_modules/.package-lock.json

setup-test: $(VENV)/.test node_modules/.package-lock.json
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq postgresql; }
	@# tests/deploy runs the compose file's nginx config in front of two bridges.
	@test -x /usr/sbin/nginx || command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq nginx; }
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq redis-server; }

node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error

demo: setup
	$(VENV)/bin/bridge simulate fixtures/caller-barge-in.wav

# Static checks first: a lint, format or type error fails the test command like a test does.
check: $(VENV)/.test
	$(VENV)/bin/ruff check bridge twiml tests
	$(VENV)/bin/ruff format --check bridge twiml tests
	$(VENV)/bin/mypy

# The suite mostly waits on real-time audio: several processes share the cores well.
TEST_WORKERS ?= 4
test: setup-test check
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup-test
	$(VENV)/bin/bridge bench
