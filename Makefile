# riembench: two commands from a fresh clone, `make table5` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN     := $(BIN)/riembench
PYTEST_ARGS ?= -n 2

.PHONY: venv test table1 table5 tables bench clean-store lint help

help:
	@echo "make table1   run table 1 (LeNet-5 / ResNet-9 FC layers, digits on CPU; DATA=mnist for MNIST)"
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
	$(BIN)/python benchmarks/convert.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/eval_throughput.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Table 1 (embedded default: digits on CPU). DATA=mnist|cifar100 with RIEMBENCH_DATA set runs the
# real datasets; EXTRA passes further overrides (e.g. EXTRA="device=cuda method.fit.steps=2000").
DATA   ?= digits
T1     := $(RUN) experiment=table1 dataset=$(DATA) $(EXTRA)
# CPU-sized fits: RieM polishes its SVD warm start (unshared neurons and d_mu = d, chosen by
# data-free weight fidelity, docs/table1.md); Lp-norm starts from the authors' random init.
T1RIEM ?= method.fit.steps=200 method.fit.lr=0.001 method.share=false method.d_mu_ratio=1.0
T1LP   ?= method.fit.steps=1000
# ResNet-9 with a 512-196-C head: 102.5K FC parameters for 10 classes, the paper's 102.8K
# (docs/backbones.md: no single-Linear head gets there); use 167 for CIFAR-100 (102.5K).
R9     ?= backbone.head_hidden=196

table1: $(STAMP)
	$(BIN)/riembench-train backbone=lenet5 dataset=$(DATA) train.progress=false
	$(BIN)/riembench-train backbone=resnet9 $(R9) dataset=$(DATA) train.progress=false
	$(T1) backbone=lenet5 method=original 'seeds=[0]'
	$(T1) backbone=resnet9 $(R9) method=original 'seeds=[0]'
	$(T1) backbone=lenet5 method=lpnorm_p1,lpnorm_p2,lpnorm_p3 size.params=6300 $(T1LP)
	$(T1) backbone=lenet5 method=riem size.params=7200 $(T1RIEM)
	$(T1) backbone=lenet5 method=svd size.params=6300,7200 'seeds=[0]'
	$(T1) backbone=resnet9 $(R9) method=lpnorm_p1,lpnorm_p2,lpnorm_p3 size.params=32000 $(T1LP)
	$(T1) backbone=resnet9 $(R9) method=riem size.params=33400,51500 $(T1RIEM)
	$(T1) backbone=resnet9 $(R9) method=svd size.params=32000,51500 'seeds=[0]'
	$(BIN)/python -m riembench.report table1

# Table 4 (DETR-R50 on COCO val2017): needs COCO under $(RIEMBENCH_DATA)/coco (or DATA_ROOT=...)
# and facebook/detr-resnet-50 in the Hugging Face cache, in practice a GPU; docs/detection.md.
# Without the data the first command stops with an error saying what to fetch. EXTRA passes
# further overrides (e.g. EXTRA="device=cuda:1 dataset.limit=100" for a quick subset).
.PHONY: table4
DATA_ROOT ?=
T4        := $(RUN) experiment=table4 $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(EXTRA)
T4SEEDS   ?= 'seeds=[0,1,2,3,4,5,6,7,8,9]'

table4: $(STAMP)
	$(T4) method=original,quant size.mb=33.4 'seeds=[0]'
	$(T4) method=svd size.mb=33.4 'seeds=[0]'
	$(T4) method=riem size.mb=43.6,33.4,26.7 method.progress=false $(T4SEEDS)
	$(BIN)/python -m riembench.report table4
