# Tweetoscope: `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test chaos setup setup-tools bench clean help

help:
	@echo "make demo   set up .venv, run the embedded pipeline on the shipped sample and show where to look"
	@echo "make test   set up .venv, Chromium, a Kafka broker, and run the whole test suite"
	@echo "make chaos  the fault matrix on real processes with more seeds and a two-minute chaos run"
	@echo "make bench  run the benchmarks under bench/ (see BENCHMARKS.md)"

# uv installs the ~95 dependencies in about 10 s where pip takes minutes (the venv keeps pip).
# --compile-bytecode writes the .pyc files at install time: where PYTHONDONTWRITEBYTECODE is set (it
# is on this machine) nothing would ever write them, and every stage process and Dask worker would
# compile scikit-learn, distributed, bokeh... from source at each start (8.8 s of imports instead of 3.5 s).
UV_VERSION := 0.13.9
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test,bench,k8s,notebooks,deploy-check]'
	@touch $(STAMP)

setup: $(STAMP)

# Offline checkers for the deployment files: checkov (own venv: its pins clash with ours) and
# kustomize (built from the Go module proxy into .venv/bin).
TOOLS_STAMP := .venv-tools/.installed-stamp
$(TOOLS_STAMP): $(STAMP)
	@test -x .venv-tools/bin/python || $(PYTHON) -m venv .venv-tools
	$(BIN)/uv pip install --quiet --python .venv-tools/bin/python checkov==3.3.30
	@touch $(TOOLS_STAMP)

$(BIN)/kustomize: $(STAMP)
	GOBIN=$(CURDIR)/$(BIN) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1

setup-tools: $(TOOLS_STAMP) $(BIN)/kustomize

# The demo replays the sample at 3,000 x real time, cascades 10 min apart, so that cascades end
# while others are still being watched: the learner refits the forest as true sizes arrive and
# the later forecasts use its models (about a minute).
DEMO_OUT ?= out/demo
demo: setup
	$(BIN)/tweetoscope run --data data/sample --out $(DEMO_OUT) --speed 3000 --stagger 600 \
		--learner-every 20 --learner-interval 0
	@echo
	@echo "While it ran, the live dashboard was at http://127.0.0.1:5006/; see it again: $(BIN)/tweetoscope dashboard --out $(DEMO_OUT)"
	@echo "Every topic of the run is in $(DEMO_OUT)/<topic>.jsonl: alerts.jsonl (forecasts that crossed the"
	@echo "threshold), stats.jsonl (each forecast's ARE once the true size is known), models.jsonl (the refitted"
	@echo "forests, skops, base64). Backtest the same cascades: $(BIN)/tweetoscope backtest data/sample"

# The Kafka broker is started (and stopped) by the test session itself (tests/conftest.py,
# scripts/kafka.sh); the browser test needs Debian's Chromium (scripts/setup-browser.sh).
# Two pytest workers (pytest-xdist), one per core, each with its own broker; a module's tests stay
# on one worker (--dist loadfile) and modules go in collection order (tests/conftest.py: the fault
# matrix first, on one worker; the other modules on the other, those with stage processes last).
# (--dist loadgroup does not group under pytest 9; xdist's default reorders modules by size.)
TEST_WORKERS ?= 2
test: setup setup-tools
	scripts/setup-browser.sh
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The fault matrix of tests/test_faults.py (one seed of each case runs in make test): seeds 1-4,
# and the chaos run for two minutes per seed (docs/reliability.md records the figures).
CHAOS_SEEDS ?= 1,2,3,4
CHAOS_SECONDS ?= 120
chaos: setup
	TWEETOSCOPE_CHAOS_SEEDS=$(CHAOS_SEEDS) TWEETOSCOPE_CHAOS_SECONDS=$(CHAOS_SECONDS) \
		$(BIN)/python -m pytest -q -s tests/test_faults.py -p no:cacheprovider

bench: setup
	$(BIN)/python bench/bench_fit.py
	$(BIN)/python bench/bench_powerlaw.py
	$(BIN)/python bench/bench_predictive.py
	$(BIN)/python bench/bench_forest.py
	$(BIN)/python bench/bench_process.py
	$(BIN)/python bench/best_achievable.py --n 1000 --seed 0
	$(BIN)/python bench/bench_embedded.py
	$(BIN)/python bench/bench_run.py
	$(BIN)/python bench/bench_dask.py --cascades 10000 --repeat 10 --chunks 1024,8192,16384
	$(BIN)/python bench/bench_kafka_ingest.py
	$(BIN)/python bench/bench_latency.py
	$(BIN)/python bench/bench_latency.py --one-process
	$(BIN)/python bench/bench_stages.py

clean:
	rm -rf $(VENV) .venv-tools .pytest_cache build *.egg-info
