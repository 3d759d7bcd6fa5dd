# riembench: two commands from a fresh clone, `make table5` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN     := $(BIN)/riembench
PYTEST_ARGS ?= -n 2

.PHONY: venv test table1 table5 tables bench gpu-wheels clean-store lint help

help:
	@echo "make table1   run table 1 (LeNet-5 / ResNet-9 FC layers, digits on CPU; DATA=mnist for MNIST)"
	@echo "make table2   run table 2 (ImageNet-1k, equal size: needs ImageNet val + torchvision weights, GPU)"
	@echo "make table3   run table 3 (ImageNet-1k, pruning 10%/30%: same needs)"
	@echo "make table4   run table 4 (DETR-R50 on COCO val2017: needs COCO + DETR weights, GPU)"
	@echo "make table5   run table 5 (synthetic matrices, embedded default size, CPU) and write tables/"
	@echo "make tables   regenerate every table from the run store, no rerun"
	@echo "make test     run the test suite"
	@echo "make bench    run the speed benchmarks (benchmarks/results/)"
	@echo "make gpu-wheels  wheels a lent GPU machine lacks (then: bash benchmarks/gpu_session.sh there)"

venv: $(STAMP)

# torch first, pinned to the builds that pip takes from local files (pyproject.toml only asks
# for a range); then the package with every table's extras (table 4: detection; timm: hubs).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev,detection,hubs]"
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

# Table 1 (embedded default: digits on CPU). DATA=mnist|cifar100 with RIEMBENCH_DATA set runs the
# real datasets; EXTRA passes further overrides (e.g. EXTRA="device=cuda method.fit.steps=2000").
DATA   ?= digits
T1     := $(RUN) experiment=table1 dataset=$(DATA) $(EXTRA)
# RieM on LeNet-5: the spectral default start and the method's 2000-step fit (lr 1e-2), unshared
# neurons and d_mu = d (the lowest data-free weight error of the variants in docs/init.md; ten
# seeds take about 2 minutes on this CPU). On ResNet-9's 512-196-10 head the same fit would take
# 0.5-1 hour per size here, and that block does not separate the methods on digits: it keeps the
# SVD warm start with a 200-step polish at lr 1e-3 (docs/table1.md). Lp-norm's FC chains start
# from the authors' random init (no chained MDS), 1000 steps.
T1RIEM ?= method.share=false method.d_mu_ratio=1.0
T1RIEM9 ?= $(T1RIEM) method.init=svd method.fit.steps=200 method.fit.lr=0.001
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
	$(T1) backbone=resnet9 $(R9) method=riem size.params=33400,51500 $(T1RIEM9)
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

# Tables 2 and 3 (ImageNet-1k): need ImageNet val under $(RIEMBENCH_DATA)/imagenet (or
# DATA_ROOT=...) and torchvision's weight files in its cache, in practice a GPU (docs/imagenet.md).
# Without them the first command stops with an error naming the files to fetch. EXTRA passes
# further overrides (e.g. EXTRA="device=cuda dataset.limit=5000" for a quick subset). A key
# only some methods have (method.ratio) is given to one method per command: Hydra applies a
# command-line key to the default method (riem) before the sweep picks the methods.
.PHONY: table2 table3
T2     := $(RUN) -m experiment=table2 $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(EXTRA)
T3     := $(RUN) -m experiment=table3 $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(EXTRA)
# RieM / Lp-norm "8/16": embeddings stored at 8 bits, converted layers' inputs at 16 bits
Q816   ?= method.w_bits=8 method.a_bits=16
ONE    := 'seeds=[0]'

table2: $(STAMP)
	$(T2) backbone=resnet18,resnet50,densenet121 method=original $(ONE)
	$(T2) backbone=resnet18 method=dfq,quant method.w_bits=6 method.a_bits=6 $(ONE)
	$(T2) backbone=resnet18 method=riem size.mb=8.36,5.58 $(Q816)
	$(T2) backbone=resnet18 method=lpnorm size.mb=5.58 $(Q816)
	$(T2) backbone=resnet18 method=svd size.mb=8.36,5.58 size.bits=32 $(ONE)
	$(T2) backbone=resnet50 method=riem,lpnorm size.mb=12.28 $(Q816)
	$(T2) backbone=resnet50 method=svd size.mb=12.28 size.bits=32 $(ONE)
	$(T2) backbone=densenet121 method=riem,lpnorm size.mb=6.00 $(Q816)
	$(T2) backbone=densenet121 method=svd size.mb=6.00 size.bits=32 $(ONE)
	$(BIN)/python -m riembench.report table2

table3: $(STAMP)
	$(T3) backbone=resnet34,resnet101 method=original $(ONE)
	$(T3) backbone=resnet34,resnet101 method=prune method.ratio=0.1,0.3 $(ONE)
	$(T3) backbone=resnet34,resnet101 method=neuron_merge method.ratio=0.1,0.3 $(ONE)
	$(T3) backbone=resnet34 method=riem method.prune_ratio=0.1 size.mb=14.8 method.w_bits=6
	$(T3) backbone=resnet34 method=riem method.prune_ratio=0.3 size.mb=11.6 method.w_bits=6
	$(T3) backbone=resnet101 method=riem method.prune_ratio=0.1 size.mb=28.8 method.w_bits=6
	$(T3) backbone=resnet101 method=riem method.prune_ratio=0.3 size.mb=21.2 method.w_bits=6
	$(BIN)/python -m riembench.report table3
