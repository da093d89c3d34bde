# rpcapp: `make run` starts the whole demo system, `make test` runs the tests.
# Both set themselves up (virtualenv, requirements, migrations) on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
EMBEDDED_REDIS = $(shell $(BIN)/python -c "import rpcapp.embedded as e; print(e.server_binary())")
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test test-django42 test-fast screenshots lint bench clean setup

help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/bin/pip:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): requirements.txt pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-[0-9]*
	touch $(STAMP)

$(DEV_STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(DEV_STAMP) $(STAMP)

setup: $(STAMP)  ## create the virtualenv, install requirements, migrate
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py demouser

run: setup  ## run web, RPC workers, Celery worker and beat, embedded Redis
	@$(BIN)/python manage.py rpcredis start >/dev/null
	@echo ""
	@echo "  rpcapp demo"
	@echo "  site:       http://$(HOST):$(PORT)/"
	@echo "  admin:      http://$(HOST):$(PORT)/admin/   (login: admin / admin)"
	@echo "  dashboard:  http://$(HOST):$(PORT)/rpc/dashboard/"
	@echo "  redis:      $$($(BIN)/python manage.py rpcredis url)"
	@echo "  stop with Ctrl-C"
	@echo ""
	@trap '$(BIN)/python manage.py rpcredis stop >/dev/null' EXIT; \
	  HOST=$(HOST) PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f Procfile start

# The second run, on the Redis from PATH, repeats what depends on the Redis
# version (calls, workers, processes, locks, events, streams, ACL, TLS,
# Sentinel, Cluster); the protocol, catalog, balancing, HTTP, admin, history,
# browser, install and fault tests run once.
REDIS_TESTS := tests/test_client.py tests/test_worker.py tests/test_processes.py \
	tests/test_locks.py tests/test_events.py tests/test_streams.py \
	tests/test_security.py tests/test_sentinel.py tests/test_cluster.py tests/test_hostile_entries.py

test: $(DEV_STAMP)  ## run the whole test suite on Redis 6.2 (embedded), and its Redis-dependent part again on Redis 7
	@scripts/test-system-deps
	@status=0; \
	RPCAPP_TEST_REDIS_SERVER=$(EMBEDDED_REDIS) $(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	if command -v redis-server >/dev/null; then \
	  echo "== again on $$(redis-server --version | cut -d' ' -f3)"; \
	  RPCAPP_TEST_REDIS_SERVER=$$(command -v redis-server) $(BIN)/pytest $(REDIS_TESTS) $(PYTEST_ARGS) || status=1; \
	else echo "== no redis-server on PATH: Redis 7 run skipped"; fi; \
	$(MAKE) --no-print-directory test-django42 || status=1; \
	if ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } || ! command -v chromedriver >/dev/null; then \
	  echo "== browser tests skipped: chromium and chromium-driver are not installed (as root: apt-get install chromium chromium-driver)"; fi; \
	exit $$status

# Django 4.2 LTS: the install test and the core client/worker tests, in a
# virtualenv of their own.
DJ42 := .venv-django42
DJ42_STAMP := $(DJ42)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
$(DJ42_STAMP): pyproject.toml
	test -x $(DJ42)/bin/pip || $(PYTHON) -m venv $(DJ42)
	$(DJ42)/bin/pip install -q --upgrade pip
	$(DJ42)/bin/pip install -q -e ".[all]" "Django>=4.2,<5" dj-database-url django-redis \
	  "pytest>=8,<10" "pytest-django>=4.8,<5" "pytest-timeout>=2.3,<3" "psutil>=5.9,<8" "build>=1.2,<2"
	rm -f $(DJ42)/.installed-*
	touch $(DJ42_STAMP)

test-django42: $(DJ42_STAMP) $(DEV_STAMP)  ## the install test and the core client and worker tests on Django 4.2 LTS
	@echo "== on Django $$($(DJ42)/bin/python -c 'import django; print(django.get_version())')"
	RPCAPP_TEST_REDIS_SERVER=$(EMBEDDED_REDIS) $(DJ42)/bin/pytest tests/test_install.py tests/test_client.py tests/test_worker.py $(PYTEST_ARGS)

test-fast: $(DEV_STAMP)  ## run the tests once, on whatever redis-server is found first
	$(BIN)/pytest $(PYTEST_ARGS)

screenshots: $(DEV_STAMP)  ## run the browser tests, saving their screenshots in docs/img
	RPCAPP_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest -m browser $(PYTEST_ARGS)

lint: $(DEV_STAMP)  ## ruff and the import-layer contracts
	$(BIN)/ruff check rpcapp demo project tests bench
	$(BIN)/lint-imports

bench: $(DEV_STAMP)  ## run the benchmark suite (see docs/benchmarks.md)
	$(BIN)/python bench/run.py

clean:  ## stop the embedded Redis and remove local state
	-$(BIN)/python manage.py rpcredis stop
	rm -rf var db.sqlite3 build dist *.egg-info
