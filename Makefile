# Gaia: `make run` shows a workflow computing on this machine; `make test` runs everything.
# Both install what they need first (a virtualenv in .venv, bubblewrap when possible;
# `make test` also Debian's chromium for the dashboard's browser tests).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= gaia-data

# On a terminal, `make run` keeps the dashboard up after the run (Ctrl-C ends it).
STAY   ?= $(shell test -t 0 && test -t 1 && echo --stay)

.PHONY: run test quick lint typecheck unit bench bench-compare bench-operator deps sandbox clean help components kafka dashboard browser \
        node-tools image e2e cluster-up cluster-down

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 16

run: deps sandbox dashboard  ## run the triangle workflow on the embedded server, with live progress
	$(BIN)/gaia run examples/triangle --data $(DATA) $(STAY)

test: deps sandbox browser components kafka node-tools image lint typecheck  ## lint, type-check and run the whole test suite (with the real-node tier)
	$(BIN)/pytest
	$(BIN)/pytest -m e2e tests/e2e

quick: deps  ## the fast tier: every test not marked slow (no process, no component)
	$(BIN)/pytest -m "not slow and not e2e" -q

unit: deps  ## only the fast engine tests
	$(BIN)/pytest tests/engine -q

lint: deps
	$(BIN)/ruff check --no-cache operator tests benchmarks dashboard/build.py
	$(BIN)/ruff format --check operator tests benchmarks dashboard/build.py

typecheck: deps
	$(BIN)/mypy
	MYPYPATH=operator:benchmarks:tests/kube:tests $(BIN)/mypy --follow-imports=silent benchmarks
	$(BIN)/python dashboard/build.py --deps
	cd dashboard && node_modules/.bin/tsc --noEmit

# The page is committed, built (npm ci + vite, Node 20+) only when dashboard/ changed:
# `make run` needs no Node; tests/dashboard checks that the committed page is built from
# the sources (so after changing them: `make dashboard`, and commit the result).
dashboard:  ## build the dashboard into operator/gaia/dashboard/ if its sources changed
	$(PYTHON) dashboard/build.py

bench: deps sandbox  ## print the engine's and the server's figures
	$(BIN)/python benchmarks/engine_bench.py

# BENCH_ARGS passes options, e.g. BENCH_ARGS='--million --profile bench-profiles'.
bench-compare: deps sandbox  ## Gaia against Snakemake and the raw spawn rate, one table
	$(BIN)/python benchmarks/compare.py $(BENCH_ARGS)

bench-operator: deps sandbox components  ## the operator against the test API server
	$(BIN)/python benchmarks/operator_bench.py $(BENCH_ARGS)

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Tasks run sealed by bubblewrap (docs/security.md); without it no task runs, unless the
# server is started with --sandbox none (unsafe).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "note: could not install bubblewrap; tasks will not run (see docs/security.md)"; \
	  else echo "note: bubblewrap missing (apt-get install bubblewrap); tasks will not run"; fi; }

# Debian's chromium, for the dashboard's browser tests (tests/dashboard).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	      || echo "note: could not install chromium; the browser tests will fail"; \
	  else echo "note: chromium missing (apt-get install chromium); the browser tests will fail"; fi; }

clean:  ## remove the virtualenv, caches and the run's data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DATA) dashboard/node_modules

components:  ## build the real Kubernetes test components (cached in .cache/)
	tests/components/build.sh

kafka:  ## fetch the Apache Kafka broker jars for the event-bus tests (cached in .cache/)
	tests/components/kafka.sh

# The real-node tier (tests/e2e): Debian's container tools, the image, a one-node cluster.
NODE_TOOLS := containerd runc podman buildah mmdebstrap containernetworking-plugins iptables
node-tools:  ## (root) the Debian packages of the real-node tier: containerd, runc, podman, ...
	@missing=$$(for p in $(NODE_TOOLS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing >/dev/null; \
	  else echo "note: the real-node tier needs root and: apt-get install $$missing"; fi; fi

image: node-tools  ## build the Dockerfile as gaia:dev with podman (layers cached in .cache/e2e)
	tests/e2e/image.sh

e2e: deps node-tools components image  ## the real-node tier: helm install, workflows as real pods
	$(BIN)/pytest tests/e2e -m e2e

cluster-up: node-tools components image  ## a one-node cluster for you; prints KUBECONFIG=...
	tests/e2e/cluster.sh up

cluster-down:  ## take that cluster down, leaving nothing behind
	tests/e2e/cluster.sh down
