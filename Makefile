# riembench: two commands from a fresh clone, `make table5` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN     := $(BIN)/riembench
PYTEST_ARGS ?= -n 2

.PHONY: venv test table1 table5 tables bench gpu-wheels lint typecheck help

help:
	@echo "make table1   run table 1 (LeNet-5 / ResNet-9 FC layers, digits on CPU; DATA=mnist for MNIST)"
	@echo "make table2   run table 2 (ImageNet-1k, equal size: needs ImageNet val + torchvision weights, GPU)"
	@echo "make table3   run table 3 (ImageNet-1k, pruning 10%/30%: same needs)"
	@echo "make table4   run table 4 (DETR-R50 on COCO val2017: needs COCO + DETR weights, GPU)"
	@echo "make table5   run table 5 (synthetic matrices, embedded default size, CPU), report in riembench-tables/"
	@echo "make tables   regenerate the committed tables (tables/) from their records (tables/records), no rerun"
	@echo "make test     lint, type-check and run the test suite"
	@echo "make bench    run the speed benchmarks (benchmarks/results/)"
	@echo "make gpu-wheels  wheels for a GPU machine without hydra-core (then: bash benchmarks/gpu_session.sh there)"

venv: $(STAMP)

# torch first, pinned to the builds that pip takes from local files (pyproject.toml only asks
# for a range); then the package with every table's extras (table 4: detection; timm: hubs).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev,detection,hubs,slurm]"
	touch $(STAMP)

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every table is one command: its plan (conf/table/<name>.yaml) holds the rows.
# EXTRA passes overrides to every row (EXTRA="device=cuda dataset.limit=5000"); DATA_ROOT sets
# data.root; DATA=mnist|cifar100 runs table 1 on the paper's datasets (plan table1_<DATA>).
# `riembench table=tableN dry_run=true` lists what a table would run.
DATA      ?= digits
DATA_ROOT ?=
EXTRA     ?=
ARGS      := $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(EXTRA)
T1PLAN    := $(if $(filter digits,$(DATA)),table1,table1_$(DATA))

.PHONY: table2 table3 table4
table1: $(STAMP)
	$(RUN) table=$(T1PLAN) $(ARGS)

table2 table3 table4 table5: $(STAMP)
	$(RUN) table=$@ $(ARGS)

# the committed tables/ are rewritten only here, from the committed records (a table's own run
# writes ./riembench-tables from ./runs)
tables: $(STAMP)
	$(BIN)/riembench-report all --store tables/records --out tables

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/convert.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/eval_throughput.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/engine_ablation.py

# A GPU machine with torch but without hydra-core/omegaconf: fetch them as wheels into .whl/
# (git-ignored), copy .whl/ along, then run `bash benchmarks/gpu_session.sh` there
# (docs/benchmarks.md, "On a GPU machine").
gpu-wheels: $(STAMP)
	mkdir -p .whl
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1
	$(BIN)/pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy
