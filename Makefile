# movierec: `make run` serves recommendations, `make test` runs the test suite.
# Both create .venv, install the pinned environment and generate the gRPC code first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The team's MovieLens copies, when this checkout sits beside them (never committed).
SHARED_ML := $(abspath ../shared/data/ml-1m)
ifeq ($(origin MOVIELENS_DIR), undefined)
ifneq ($(wildcard $(SHARED_ML)/ratings.dat),)
export MOVIELENS_DIR := $(SHARED_ML)
endif
endif
PYTEST_ARGS ?=

.PHONY: help install protos protoset system-deps data test e2e lint run lock clean bench-milvus bench eval retrain monitor

help:
	@echo "make run      install, get data and models, start every service, show recommendations"
	@echo "make monitor  Prometheus on :9090 scraping the services of \`make run\`, alerts loaded"
	@echo "make test     install and run the test suite (real PostgreSQL, Redis, Milvus)"
	@echo "make e2e      only the end-to-end tests (four services, web page in Chromium)"
	@echo "make bench    benchmarks (minutes; numbers go to docs/benchmarks.md)"
	@echo "make eval     train what is missing under EVAL_ROOT, evaluate every served path"
	@echo "make retrain  snapshot the catalog, train, validate against the serving models, promote"
	@echo "make lint     ruff"
	@echo "make protos   regenerate the gRPC code;  make protoset  descriptor set for ghz"
	@echo "make images   container images with podman;  make kube-smoke  deploy/k8s run locally"

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is pinned (constraints.txt): pip takes the CPU wheel this machine keeps on disk.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -c constraints.txt "setuptools>=68,<81"
	$(PIP) install -q --no-build-isolation -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP) protos

protos: $(STAMP)
	$(PY) -m movierec.protogen

protoset: $(STAMP)
	$(PY) -m movierec.protogen --protoset build/movierec.protoset

system-deps:
	@scripts/system-deps.sh

data: install
	$(VENV)/bin/movierec data fetch --dataset ml-1m

test: install system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

e2e: install system-deps
	$(PY) -m pytest -q tests/test_e2e.py tests/test_web_browser.py $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check movierec services gateway web tests benchmarks scripts loadtest

# `MOVIEREC_TRACE_FILE=$PWD/traces.jsonl make run`: every process appends its spans there;
# `movierec trace waterfall --file traces.jsonl --out w.png` draws one request (docs/tracing.md).
run: install system-deps data
	$(VENV)/bin/movierec up

# docs/operations.md: Debian's Prometheus against the metrics ports of `make run` (run
# it beside it), with deploy/monitoring/movierec-rules.yaml loaded; Ctrl-C stops it.
monitor: install system-deps
	$(PY) -m movierec.stack.monitor $(MONITOR_ARGS)

# docs/lifecycle.md: against the stores `make run` uses (or DATABASE_URL / MILVUS_URI).
retrain: install system-deps
	$(VENV)/bin/movierec retrain $(RETRAIN_ARGS)

lock: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^movierec' \
	  | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; \
	  echo "setuptools==$$($(PIP) show setuptools | sed -n 's/^Version: //p')"; } > constraints.new
	mv constraints.new constraints.txt

bench-milvus: install
	$(PY) benchmarks/milvus_embedded.py

bench: install system-deps
	$(PY) benchmarks/catalog_bench.py
	$(PY) benchmarks/retriever_bench.py
	$(PY) benchmarks/serving_bench.py

# docs/evaluation.md: models per protocol under EVAL_ROOT/artifacts-<protocol> (trained
# when missing, one thread), then the served paths and PinSage beside the baselines, on
# the per-user split, user cold start and the two temporal protocols; then onboarding
# (a profile plus k first likes, docs/onboarding.md) on the cold-start models.
EVAL_ROOT ?= .movierec/eval
EVAL_OUT ?= $(EVAL_ROOT)/report
EVAL_CLI := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 $(VENV)/bin/movierec
eval: install data
	@for pair in recbole:recbole_811 cold_start:users_80_10_10 leave_last_out:leave_last_out \
	    global_time:time_90; do \
	  protocol=$${pair%%:*}; split=$${pair##*:}; root=$(EVAL_ROOT)/artifacts-$$protocol; \
	  for model in pinsage fusion sasrec; do \
	    test -f $$root/$$model/LATEST || $(EVAL_CLI) train $$model --split $$split --threads 1 \
	      --no-progress --artifacts $$root \
	      --checkpoint-dir $(EVAL_ROOT)/checkpoints/$$model-$$protocol || exit 1; \
	  done; \
	  $(EVAL_CLI) evaluate serving --protocol $$protocol --artifacts $$root \
	    --out $(EVAL_OUT) || exit 1; \
	  $(EVAL_CLI) evaluate pinsage --protocol $$protocol --artifacts $$root --json \
	    > $(EVAL_OUT)/pinsage-$$protocol.json || exit 1; \
	done
	$(EVAL_CLI) evaluate onboarding --artifacts $(EVAL_ROOT)/artifacts-cold_start --draws 3 \
	  --out $(EVAL_OUT)

# docs/deploy.md: every image from deploy/Containerfile with podman (BASE=IMAGE to build on
# that base; else python:3.11-slim if pullable, or a local debootstrap one), then the
# manifests run with podman kube play, checked and torn down (not part of `make test`).
.PHONY: images kube-smoke
images: install
	@scripts/container-deps.sh
	$(PY) scripts/images.py $(if $(BASE),--base $(BASE))

kube-smoke: images system-deps
	$(PY) scripts/kube_smoke.py $(if $(SMOKE_REPORT),--report $(SMOKE_REPORT))

clean:
	rm -rf build .pytest_cache .ruff_cache
