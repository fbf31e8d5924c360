# Tweetoscope: `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test setup bench clean help

help:
	@echo "make demo   set up .venv, run the backtest on the shipped sample and show where to look"
	@echo "make test   set up .venv and run the whole test suite"
	@echo "make bench  run the benchmarks under bench/ (see BENCHMARKS.md)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/tweetoscope backtest data/sample
	@echo
	@echo "Backtest of the 200 simulated cascades in data/sample (their true parameters in data/sample/truth.jsonl)."
	@echo "Try the real cascades: $(BIN)/tweetoscope backtest data/seismic-tideh --windows 600,3600,21600"

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_fit.py
	$(BIN)/python bench/bench_powerlaw.py
	$(BIN)/python bench/best_achievable.py --n 1000 --seed 0

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
