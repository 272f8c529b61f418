# hstred: set-up, tests and demo. Needs only python3 (3.11), a C++ compiler and
# network access to PyPI; everything else is installed into .venv from uv.lock.

PYTHON      ?= python3
VENV        := .venv
BOOTSTRAP   := .bootstrap
UV_VERSION  := 0.13.8
UV          := $(BOOTSTRAP)/bin/uv
DEMO_DIR    ?= demo
PYTEST_ARGS ?=
# Test files run two at a time (pytest-xdist), each file whole on one worker so its
# simulated programs are made once, handed out in the order tests/conftest.py gives them
# (heaviest first; xdist's own reordering by test count is off); TEST_WORKERS=0 runs them
# in this process, one by one.
TEST_WORKERS ?= 2

# Never download a Python interpreter: use the machine's python3.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Byte-compile at install time, as the container does: where Python may not write
# __pycache__ (PYTHONDONTWRITEBYTECODE, read-only installs) every process would
# otherwise recompile drizzlepac and its dependencies on import (about 10 s against 3 s).
export UV_COMPILE_BYTECODE := 1

.PHONY: install test demo lint container clean help

help:
	@echo "make demo     install, simulate a small ACS/WFC program into $(DEMO_DIR)/ and reduce it"
	@echo "             (products: $(DEMO_DIR)/DEMO_F606W_drz_sci.fits ..., report: $(DEMO_DIR)/DEMO_report.html)"
	@echo "make test     install and run the test suite"
	@echo "make install  create $(VENV) with the exact versions pinned in uv.lock"
	@echo "make lint     ruff over the package and tests"
	@echo "make container  lint, build and run the container images with podman (as root)"

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# arcticpy is built from source against the locked numpy and Cython, with OpenMP on:
# first everything else, then arcticpy without build isolation and without uv's
# wheel cache (a cached build could lack OpenMP).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON) --no-install-package arcticpy-no-gsl
	CFLAGS=-fopenmp CXXFLAGS=-fopenmp LDFLAGS=-fopenmp \
	  $(UV) sync --frozen --python $(PYTHON) --no-cache --reinstall-package arcticpy-no-gsl
	$(VENV)/bin/python -m hstred.cte.openmp
	touch $@

test: install
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  $(PYTEST_ARGS)

demo: install
	@if ls $(DEMO_DIR)/*_raw.fits >/dev/null 2>&1; then \
	  echo "$(DEMO_DIR)/ already holds a simulated program; reducing it"; \
	else \
	  $(VENV)/bin/hstred simulate $(DEMO_DIR) --visits 2 --exposures 2 --filters F606W,F814W --seed 1; \
	fi
	$(VENV)/bin/hstred run DEMO --data $(DEMO_DIR)

container:
	bash .ci/container

lint: install
	$(VENV)/bin/ruff check hstred tests

clean:
	rm -rf $(VENV) $(BOOTSTRAP) $(DEMO_DIR) .pytest_cache
