# Two set-up commands on a fresh clone: `make demo` and `make test`. Each creates .venv when it is
# missing, installs torch==2.13.0 first (so no CUDA build is pulled in), then retain with its test
# extras; the stamp file makes a second call skip the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.retain-installed

.PHONY: demo demo-quick test bench bench-quick install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/retain demo

demo-quick: $(STAMP)
	$(BIN)/retain demo --quick

test: $(STAMP)
	$(BIN)/python -m pytest

# Every benchmark against its baseline, side by side, into benchmarks/RESULTS.md (about 30 min
# on 2 cores; installs lm-eval and mergekit into .bench/peers, never into .venv).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench.py --quick

clean-venv:
	rm -rf $(VENV)
