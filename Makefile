# One command to run everything, one to test everything. Needs Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-slow lint typecheck validate-deploy browser demo bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up, then start Temporal (with its Web UI), the sandbox gateway, a worker and the API
run: $(STAMP)
	$(BIN)/paysaga dev

## demo: drive the running system (`make run` in another terminal) through the scenarios
demo: $(STAMP)
	$(BIN)/paysaga demo

## test: set up, then lint (style, format, layers), type-check, check the deployment files and
## run both test tiers
test: lint typecheck validate-deploy test-fast test-slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## validate-deploy: the Compose files (every combination, every required value) and the
## Kubernetes manifests, checked offline; installs Debian's docker-compose if it is missing
validate-deploy: $(STAMP)
	VENV_BIN=$(BIN) deploy/ci/validate.sh

## test-fast: unit, database (SQLite and PostgreSQL) and workflow (time-skipping) tests
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

## browser: Debian's Chromium, which the Web UI test drives through Playwright (Playwright's
## own browser download is not used)
browser:
	deploy/ci/apt-install.sh /usr/bin/chromium chromium

## test-slow: the whole system as processes over HTTP, and the Web UI and the checkout page in
## Chromium, on SQLite and on PostgreSQL at once (they mostly wait on processes and timers, so
## two cores take both; each starts its own servers on free ports); PostgreSQL's report follows
test-slow: $(STAMP) browser
	@mkdir -p .artifacts
	@PAYSAGA_TEST_DATABASE=postgresql $(BIN)/pytest -m slow -p no:cacheprovider \
		> .artifacts/test-slow-postgresql.log 2>&1 & postgresql=$$!; \
	PAYSAGA_TEST_DATABASE=sqlite $(BIN)/pytest -m slow -p no:cacheprovider; sqlite=$$?; \
	wait $$postgresql; postgresql=$$?; \
	echo "--- the slow tier on PostgreSQL (.artifacts/test-slow-postgresql.log) ---"; \
	cat .artifacts/test-slow-postgresql.log; \
	test $$sqlite -eq 0 && test $$postgresql -eq 0

## bench: the whole system's speed and memory as ratios to the engine and to a bare callback
## endpoint, measured in the same run (README: Figures); writes .bench/summary.json
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## chaos: 1,000 orders on PostgreSQL while a worker, an API and Temporal are SIGKILLed and
## restarted, the database is cut off for 10 s and the sandbox fails 30 % of gateway calls and
## drops 20 % of notifications; then checks that no order and no money was lost (exit 1 if any)
chaos: $(STAMP)
	$(BIN)/python -m benchmarks.chaos

clean:
	rm -rf $(VENV) .paysaga .mypy_cache .ruff_cache .pytest_cache
