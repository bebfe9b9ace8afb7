# Hookgate developer targets. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The example receiver's secret: the same value as examples/secrets.yaml (an example, not a secret).
EXAMPLE_SECRET ?= $(shell sed -n 's/^ *secret: *\(whsec_[A-Za-z0-9+/=]*\).*/\1/p' examples/secrets.yaml | head -1)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv system-deps run test test-quick test-integration test-e2e lint typecheck check clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(BIN)/hookgate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,operator]'
	@touch $@

venv: $(BIN)/hookgate ## create .venv with Hookgate and its development tools

# Brokers for the broker-source tests: RabbitMQ from Debian, Java + Maven for Kafka and
# ElasticMQ (their jars are fetched into .cache/ by the test fixtures), NATS from PyPI.
# The tests run every server themselves on loopback; a system RabbitMQ is not needed.
system-deps: node-deps ## install the servers the tests run for real (Redis, RabbitMQ, Java, openssl)
	@command -v redis-server >/dev/null && command -v openssl >/dev/null && \
	  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v java >/dev/null && \
	  command -v mvn >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install \
	      -y -qq redis-server openssl rabbitmq-server openjdk-17-jre-headless maven; \
	    $(SUDO) service rabbitmq-server stop >/dev/null 2>&1 || true; }

run: venv ## run the gateway on its embedded queue with examples/ and a local receiver on :9000
	@set -m; trap 'kill %1 2>/dev/null' EXIT; \
	$(BIN)/hookgate receive --port 9000 --secret '$(EXAMPLE_SECRET)' --data-dir .hookgate & \
	$(BIN)/hookgate run --config examples --data-dir .hookgate

test: venv system-deps ## everything: unit, integration (real Redis) and e2e (real kube-apiserver)
	$(BIN)/pytest -q

test-quick: venv ## unit tests only: the inner loop, a few seconds
	$(BIN)/pytest -q tests/unit

test-integration: venv system-deps ## integration tests against real Redis and real HTTP receivers
	$(BIN)/pytest -q tests/integration

test-e2e: venv system-deps ## tests against a real Kubernetes API server (built on first use)
	$(BIN)/pytest -q tests/e2e

lint: venv ## ruff, mypy (strict) and the import contracts (lint-imports)
	$(BIN)/ruff check hookgate tests
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test ## what CI runs

clean: ## remove the virtualenv, caches and local data
	rm -rf $(VENV) .hookgate .mypy_cache .ruff_cache .pytest_cache

.PHONY: k8s-binaries cluster-up cluster-down node-deps node-binaries node-up node-down node-status image

k8s-binaries: ## build or reuse kube-apiserver, kube-controller-manager, kubectl, etcd, helm (.cache/k8s)
	bash hack/k8s/build

cluster-up: k8s-binaries ## start a local Kubernetes control plane on 127.0.0.1 (prints KUBECONFIG/PATH exports)
	hack/control-plane up

cluster-down: ## stop the local control plane and delete its state
	hack/control-plane down

# The test node (hack/node, docs/development-cluster.md): runc and the CNI plugins from Debian,
# buildah/debootstrap/skopeo for the images, gcc and libc6-dev for the static pause binary.
NODE_PACKAGES := runc containernetworking-plugins buildah debootstrap skopeo gcc libc6-dev

node-deps: ## install the test node's Debian packages (runc, CNI plugins, buildah, debootstrap, ...)
	@[ -x /usr/sbin/runc ] && [ -x /usr/lib/cni/bridge ] && command -v buildah >/dev/null && \
	  command -v debootstrap >/dev/null && command -v skopeo >/dev/null && \
	  command -v gcc >/dev/null && [ -f /usr/lib/x86_64-linux-gnu/libc.a -o -f /usr/lib/libc.a ] || \
	  { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(NODE_PACKAGES) || { $(SUDO) apt-get update -qq && $(SUDO) env \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(NODE_PACKAGES); }; }

node-binaries: k8s-binaries ## build or reuse kubelet, kube-scheduler (with k8s-binaries) and containerd (.cache/containerd)
	bash hack/containerd/build

image: ## build the Hookgate image with buildah (cached by input hash); load it into the node if it runs
	bash hack/image/build hookgate
	@[ ! -S /run/hookgate-node/containerd/containerd.sock ] || bash hack/image/build load

node-up: node-deps node-binaries ## start a real node (kubelet + containerd) joined to the local control plane
	@hack/control-plane status >/dev/null 2>&1 || hack/control-plane up
	hack/node up

node-down: ## stop the node and remove everything it made (the control plane keeps running)
	hack/node down

node-status: ## what of the node runs, and whether it is Ready
	hack/node status

# --- packaging: Helm chart, plain manifests, container image (docs/install.md) ------------
HELM ?= $(shell bash hack/k8s/build --print 2>/dev/null || bash hack/k8s/build)/helm

.PHONY: chart-crds deploy-manifest lint-docker lint-chart

chart-crds: ## regenerate the chart's CRD templates from crds/
	hack/sync-chart-crds

deploy-manifest: chart-crds ## regenerate deploy/hookgate.yaml from the chart
	HELM=$(HELM) hack/deploy-manifest

lint-docker: venv ## hadolint the Dockerfile
	$(BIN)/hadolint Dockerfile

lint-chart: ## helm lint (default and all-features values); generated files up to date
	$(HELM) lint --strict charts/hookgate
	$(HELM) lint --strict charts/hookgate -f charts/hookgate/ci/all-features-values.yaml
	hack/sync-chart-crds --check
	HELM=$(HELM) hack/deploy-manifest --check

# --- benchmarks (docs/benchmarks.md; code in tests/bench/, never collected by pytest) ------
BENCH_QUICK_OUT ?= build/bench
# 15 minutes for the default sizes; give more with --with-30k (e.g. 1800).
BENCH_OPERATOR_TIMEOUT ?= 900

.PHONY: bench bench-quick bench-deps bench-startup bench-operator

bench-deps: venv ## nginx-light (the benchmarks' sink) and redis-server; without nginx a slower Python sink is used
	@command -v redis-server >/dev/null || $(MAKE) system-deps
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nginx-light; } || \
	  echo "nginx-light not installed: the benchmarks fall back to a slower Python sink"

bench: bench-deps ## full benchmarks, at most 10 minutes: docs/benchmarks.{md,json} and docs/bench-*.png
	timeout 660 $(BIN)/python tests/bench/bench_run.py --profile full

bench-quick: bench-deps ## the same measurements, smaller, in under two minutes; results in $(BENCH_QUICK_OUT)/
	@mkdir -p $(BENCH_QUICK_OUT)
	@[ -f $(BENCH_QUICK_OUT)/benchmarks.md ] || cp docs/benchmarks.md $(BENCH_QUICK_OUT)/ 2>/dev/null || true
	timeout 300 $(BIN)/python tests/bench/bench_run.py --profile quick \
	  --out-json $(BENCH_QUICK_OUT)/benchmarks.json --out-md $(BENCH_QUICK_OUT)/benchmarks.md

bench-startup: venv ## hookgate validate/load/ready/reload with 10,000 endpoints + subscriptions, 3 runs (a few minutes)
	@mkdir -p $(BENCH_QUICK_OUT)
	timeout 900 $(BIN)/python tests/bench/bench_startup.py --out-json $(BENCH_QUICK_OUT)/startup.json

bench-operator: venv k8s-binaries ## the operator on a private control plane: 1,000 and 10,000 endpoints + subscriptions (BENCH_OPERATOR_ARGS=--with-30k adds 30,000); at most 15 minutes
	@command -v redis-server >/dev/null || $(MAKE) system-deps
	@mkdir -p $(BENCH_QUICK_OUT)
	timeout $(BENCH_OPERATOR_TIMEOUT) $(BIN)/python tests/bench/bench_operator.py --out-json $(BENCH_QUICK_OUT)/operator.json \
	  --plot $(BENCH_QUICK_OUT)/bench-operator.png $(BENCH_OPERATOR_ARGS)
