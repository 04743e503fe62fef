# The README's two commands: `make demo` (set up, run the demo study, report) and `make test`.
# Both create .venv when missing and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test lint bench gpu-check clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the tests use: SLURM (+ munge, slurmdbd, MariaDB for sacct), real
# Fashion-MNIST and pdflatex (the report's LaTeX test). Installed only when missing; needs
# root (CI and these machines are root).
system-deps:
	bash slurm/install.sh

demo: setup
	$(PY) -m harness sweep studies/demo.toml --executor local
	$(PY) -m harness report results/demo

test: setup system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m harness bench

# The GPU path on a CUDA node, in one command (python -m harness selftest --help):
# make gpu-check DATA_ROOT=/path/to/cifar-10-batches-py (or the JPEG ImageFolder copy)
DATA_ROOT ?= ../shared/data/cifar10-jpeg
gpu-check: setup
	$(PY) -m harness selftest --device cuda --data-root $(DATA_ROOT)

clean-venv:
	rm -rf $(VENV)
