# riembench: two commands from a fresh clone, `make table5` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN     := $(BIN)/riembench
PYTEST_ARGS ?= -n 2

.PHONY: venv test table5 tables bench clean-store lint help

help:
	@echo "make table5   run table 5 (synthetic matrices, embedded default size, CPU) and write tables/"
	@echo "make tables   regenerate every table from the run store, no rerun"
	@echo "make test     run the test suite"
	@echo "make bench    run the speed benchmarks (benchmarks/results/)"

venv: $(STAMP)

# torch first, pinned to the builds that pip takes from local files; then the package.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

table5: $(STAMP)
	$(RUN) experiment=table5
	$(BIN)/python -m riembench.report table5

tables: $(STAMP)
	$(BIN)/python -m riembench.report all

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
