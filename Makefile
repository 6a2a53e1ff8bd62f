# The course in two commands: `make lab` to learn, `make test` to check everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: figures install lab test test-fast test-package test-notebooks exercises bench checkpoints doctor clean hub-proxy

install: $(STAMP)

# The stamp makes `make install` idempotent: a second run does nothing and
# needs no network until pyproject.toml or constraints.txt change.
# TORCH_INDEX: where to take PyTorch from, for example PyTorch's CPU-only
# index on a Linux machine without an NVIDIA GPU (see the README). Empty by
# default: pip's usual index, or the wheel a machine already has on disk.
TORCH_INDEX ?=

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet -c constraints.txt torch --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# nbgrader is here for the tests' round trip through its command line; its menus and server
	# extensions stay out of the learners' JupyterLab (they would cost a second at every start).
	$(BIN)/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	for extension in formgrader validate_assignment assignment_list course_list; do \
	    $(BIN)/jupyter server extension disable --sys-prefix nbgrader.server_extensions.$$extension >/dev/null 2>&1; \
	done
	touch $(STAMP)

# Serve the whole course, so that exercises/ and solutions/ are in the file
# browser too, and open notebook 00. (Given a file alone, JupyterLab would
# serve only the file's folder.) tests/lab_helpers.py starts it with these.
LAB_ARGS := --ServerApp.root_dir=. notebooks/00_welcome.ipynb

lab: install
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Tests and notebooks run in one pytest session, spread over one worker per
# core (pytest-xdist); all tests of a file, and all cells of a notebook, stay
# on one worker and in order. Each worker, and each kernel it starts, runs
# torch on one thread: one process with every thread left cores idle while it
# waited for kernels and browsers, and more threads than cores make torch's
# threads spin against each other. The numbers nbval compares do not depend
# on the thread count. Files go out in the order given, the longest first (the
# JupyterHub test, about five minutes, then the lesson notebooks), so that no
# long one is left for the end while the other workers wait; pytest skips the
# second mention of the hub test's file.
# The exercise notebooks are run once, by tests/test_exercises.py, which also
# checks that every check cell reports "not implemented yet".
PARALLEL := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

test: install
	$(PARALLEL) --nbval-lax tests/test_jupyterhub.py notebooks tests solutions

# The quick loop while you work: the package's tests without notebooks,
# kernels, browsers or long training runs (under 2 minutes).
test-fast: install
	$(PARALLEL) -m "not slow" tests

# The proxy in front of the local JupyterHub that tests/test_jupyterhub.py starts
# (deploy/local/): configurable-http-proxy from npm, every package pinned by
# deploy/local/package-lock.json. Needs Node.js 20 or later; .ci/run calls it.
HUB_PROXY := deploy/local/node_modules/.bin/configurable-http-proxy

hub-proxy: $(HUB_PROXY)

$(HUB_PROXY): deploy/local/package.json deploy/local/package-lock.json
	npm ci --prefix deploy/local --no-audit --no-fund
	touch $(HUB_PROXY)

exercises: install
	$(BIN)/course exercises build

doctor: install
	$(BIN)/course doctor

bench: install
	$(BIN)/course bench --json

# Redraw the architecture diagrams (a test fails when the SVGs drift from the code).
figures: install
	$(BIN)/python -c "from course_lib.lab.diagrams import write_all; write_all('notebooks/figures')"

checkpoints: install
	$(BIN)/course pretrain tiny-gpt
	$(BIN)/course pretrain tiny-bert

clean:
	rm -rf $(VENV)
