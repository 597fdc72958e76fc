# aep_lib: install, regenerate the figures, test. GNU make.
#
#   make figures              executes the notebooks of params/$(PROFILE)/ into outputs/$(PROFILE)/
#   make test                 unit tests, nbval over the committed notebooks, then the paper-smoke profile
#   make install              the environment in .venv (reused: reinstalls only when pyproject.toml
#                             or requirements-embedded.txt is newer than .venv/.installed)
#   make lab                  JupyterLab on the repository (ARGS="--no-browser --port 8899" passes options)

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# The CPU build lies on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

# Corpora and benchmarks: the project's data/ (aep_lib.paths.data_dir), or AEP_DATA_DIR from the environment.

.PHONY: install figures test notebooks lab clean-outputs

# The project's Jupyter settings (.jupyter/) go into the environment, where every `jupyter lab` and every
# kernel of .venv reads them (Jupyter reads no config from the current folder): notebooks/*.py open as
# notebooks (jupytext's default viewer), and kernels drop ipykernel's TCP-transport warning.
LAB_CONFIG := $(VENV)/etc/jupyter/labconfig/default_setting_overrides.json
KERNEL_CONFIG := $(VENV)/etc/ipython/ipython_kernel_config.py

install: $(STAMP) $(LAB_CONFIG) $(KERNEL_CONFIG)

$(LAB_CONFIG): .jupyter/labconfig/default_setting_overrides.json | $(BIN)/python
	install -D -m 644 $< $@

$(KERNEL_CONFIG): .jupyter/ipython_kernel_config.py | $(BIN)/python
	install -D -m 644 $< $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements-embedded.txt | $(BIN)/python
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps -r requirements-embedded.txt
	touch $@

figures: install
	$(BIN)/aep figures --profile $(PROFILE)

# Tests and notebooks run in parallel worker processes (pytest-xdist; TEST_WORKERS=0 runs them in this process), each
# with one torch thread so that workers do not fight over cores. On 2 cores a fresh clone's make test took
# 894-974 s (install about 150, tests 303-325, notebooks 444-504, with an empty model cache) where CI had
# taken 1,470 in one process. nbval keeps each notebook's cells in order on one worker (--dist loadscope); the notebooks share
# one store, whose claims let two workers wait for a run rather than generate it twice.
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) --maxprocesses 4
test: export HF_HUB_OFFLINE := 1
test: export TOKENIZERS_PARALLELISM := false
test: export OMP_NUM_THREADS := 1
# After nbval, tests/report/test_claims.py reads the figure records that run wrote (AEP_CLAIMS_DIR) and fails on
# any claim that does not hold; in the plain `pytest tests` step it skips (no AEP_CLAIMS_DIR).
# Last, every notebook of the paper profile runs on the stand-ins (params/paper-smoke, docs/paper.md): the GPU
# profile's code paths proven on the CPU (the stand-ins are written into the model cache on first use). It fails
# on any error; the stand-ins' claims are recorded, not enforced (params/paper-smoke/_profile.yaml). Two halves of
# the notebooks run side by side, each with its own store (one kernel at a time is single-threaded Python most of
# the time: on 2 cores the halves take about half the wall time of one run).
test: install
	$(BIN)/pytest $(XDIST) --dist worksteal tests
	tmp=$$(mktemp -d) && status=0 && \
	AEP_OUTPUT_DIR=$$tmp $(BIN)/pytest $(XDIST) --dist loadscope --nbval --nbval-current-env \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks/*.ipynb \
	    || status=$$?; \
	AEP_CLAIMS_DIR=$$tmp $(BIN)/pytest -p no:cacheprovider tests/report/test_claims.py || status=$$?; \
	ps=$$(cd params/paper-smoke && ls [!_]*.yaml | sed 's/\.yaml$$//'); \
	for half in 1 0; do \
	    AEP_OUTPUT_DIR=$$tmp/ps$$half $(BIN)/aep figures --profile paper-smoke \
	        $$(echo "$$ps" | awk -v h=$$half 'NR % 2 == h {printf "--only %s ", $$0}') >$$tmp/ps$$half.log 2>&1 & \
	done; \
	for half in 1 0; do wait -n || status=1; done; cat $$tmp/ps1.log $$tmp/ps0.log; \
	rm -rf "$$tmp"; exit $$status

# Re-executes the committed notebooks in place, each with its default parameters and its own empty
# store (as nbval will, so the committed outputs do not depend on runs another notebook left).
# NB=notebooks/fig01_self_convergence.py picks some.
NB ?= $(wildcard notebooks/*.py)
notebooks: export HF_HUB_OFFLINE := 1
notebooks: export TOKENIZERS_PARALLELISM := false
notebooks: install
	set -e; for nb in $(NB); do \
	    tmp=$$(mktemp -d); echo "== $$nb"; \
	    $(BIN)/jupytext --sync "$$nb"; \
	    AEP_OUTPUT_DIR=$$tmp $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	        --ExecutePreprocessor.timeout=1800 --ExecutePreprocessor.record_timing=False "$${nb%.py}.ipynb"; \
	    $(BIN)/jupytext --sync "$$nb"; rm -rf "$$tmp"; \
	done

# JupyterLab on the repository: notebooks/*.py open as notebooks; saving writes the .py and its .ipynb.
# ARGS passes options, e.g. make lab ARGS="--no-browser --ip 0.0.0.0 --port 8899" on a remote machine.
# A kernel idle for 30 minutes with no browser attached is shut down (each holds one or two GB of models).
ARGS ?=
lab: install
	$(BIN)/jupyter lab --notebook-dir=. \
	    --MappingKernelManager.cull_idle_timeout=1800 --MappingKernelManager.cull_interval=300 \
	    --MappingKernelManager.cull_connected=False $(ARGS)

# Removes everything generated under ./outputs (every profile; not $AEP_OUTPUT_DIR elsewhere).
clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
