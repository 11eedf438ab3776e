# Two entry points (see README): `make demo` runs the main example; `make test` runs the tests.
# Both set everything up first (virtualenv, packages); `make test` also makes sure RabbitMQ runs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.theodolite-installed
DEMO ?= $(if $(wildcard examples/fgm.yaml),examples/fgm.yaml,examples/hello.yaml)

.PHONY: setup demo test unit lint services bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/lib/python3*/site-packages/theodolite-oracle.pth
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[ml,test]'
	# Dioptra's own task engine, the oracle of the differential tests, in a folder of its own
	# put on the path by a .pth file: its service dependencies are not needed for the engine
	# (--no-deps), and pip's resolver never sees it, so installs stay quiet.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --upgrade --target $(VENV)/dioptra-oracle 'dioptra-platform==1.2.2'
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "theodolite-oracle.pth").write_text(str(pathlib.Path("$(VENV)/dioptra-oracle").resolve()) + "\n")'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/theodolite run $(DEMO)

services:
	bash scripts/ensure-rabbitmq.sh
	bash scripts/ensure-chromium.sh

test: setup services lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

unit: setup
	$(BIN)/python -m pytest tests/unit

bench: setup
	$(BIN)/python bench/core.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .theodolite
