# Two commands: `make run` (the nightly validation on demo tenants, locally) and `make test`.
# Both set up everything a fresh machine needs and are safe to re-run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONTINUITY := $(BIN)/continuity
PYTEST_ARGS ?=

.PHONY: run test setup venv node pg browser lint unit integration bench clean down status infra-check

setup: venv node pg

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt requirements-barman.txt requirements-dev.txt pyproject.toml
	@# psycopg2 (Barman's driver) builds from source: libpq's headers and pg_config, a compiler (as root).
	@command -v pg_config >/dev/null && command -v gcc >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libpq-dev gcc python3-dev python3-venv)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

node: node_modules/.stamp
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Locates PostgreSQL (PG_BIN, /usr/lib/postgresql/*/bin, else Debian's packages as root, else pgserver).
pg: venv
	$(CONTINUITY) local pg-bin

# The main job, locally: stack up, demo tenants seeded and backed up, the catalog settled, then the
# nightly restore validation of every tenant with its per-tenant table, the proof of the WAL archive, and the
# HTML report.
run: setup
	$(CONTINUITY) local up
	$(CONTINUITY) failover seed-credentials
	$(CONTINUITY) demo seed --tenants 3 --scale 1
	$(CONTINUITY) backup --all
	$(CONTINUITY) pitr base-backup
	$(CONTINUITY) catalog reconcile
	$(CONTINUITY) catalog list
	$(CONTINUITY) nightly --wait
	$(CONTINUITY) report --html report.html
	@echo "report written to report.html; evidence chain:"
	$(CONTINUITY) evidence verify

# Debian's Chromium and ChromeDriver for the page tests (tests/e2e/test_pages.py), installed when missing (as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy continuity devhost triggers orchestrations activities function_app.py
	$(BIN)/lint-imports

test: setup browser lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

status: venv
	$(CONTINUITY) local status

down: venv
	$(CONTINUITY) local down

infra-check: venv
	$(BIN)/pytest tests/unit/test_infra.py
	if command -v bicep >/dev/null; then for f in infra/*.bicep; do bicep build --stdout $$f >/dev/null || exit 1; done; fi

clean: down
	rm -rf .local
