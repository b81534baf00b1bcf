# Gaia: `make run` shows a workflow computing on this machine; `make test` runs everything.
# Both install what they need first (a virtualenv in .venv, bubblewrap when possible).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= gaia-data

.PHONY: run test lint typecheck unit bench deps sandbox clean help components kafka \
        node-tools image e2e cluster-up cluster-down

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 14

run: deps sandbox  ## run the triangle workflow on the embedded server, with live progress
	$(BIN)/gaia run examples/triangle --data $(DATA)

test: deps sandbox components kafka node-tools image lint typecheck  ## lint, type-check and run the whole test suite (with the real-node tier)
	$(BIN)/pytest
	$(BIN)/pytest -m e2e tests/e2e

unit: deps  ## only the fast engine tests
	$(BIN)/pytest tests/engine -q

lint: deps
	$(BIN)/ruff check --no-cache operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks

typecheck: deps
	$(BIN)/mypy

bench: deps sandbox  ## print the engine's and the server's figures
	$(BIN)/python benchmarks/engine_bench.py

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Tasks see their inputs at the exact container paths under bubblewrap; without it they
# still run, with the paths rewritten in the command line.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "note: could not install bubblewrap; tasks will run with rewritten paths"; \
	  else echo "note: bubblewrap missing (apt-get install bubblewrap); tasks will run with rewritten paths"; fi; }

clean:  ## remove the virtualenv, caches and the run's data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DATA)

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
