# `make demo` and `make test` work on a fresh clone: they run `setup` first when needed.
# `make setup ACCEL=cuda12` (or cuda13, tpu) adds that jax backend; PYTHON picks the venv's Python
# (jax 0.11 and 0.12 need Python >= 3.12: `make setup PYTHON=python3.12` in a fresh clone).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
ACCEL ?= cpu
ACCELS := cpu cuda12 cuda13 tpu
VENV := .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo

ifneq ($(words $(ACCEL))$(filter $(ACCELS),$(ACCEL)),1$(strip $(ACCEL)))
$(error error: unknown ACCEL '$(ACCEL)'; use one of: $(ACCELS))
endif
# An existing venv of another Python is not silently reused.
ifeq ($(origin PYTHON)$(if $(wildcard $(PY)),1),command line1)
ifneq ($(shell $(PY) -V 2>&1),$(shell $(PYTHON) -V 2>&1))
$(error error: $(VENV) has $(shell $(PY) -V 2>&1), not $(PYTHON); run 'make clean' first)
endif
endif

comma := ,
ACCEL_EXTRA := $(if $(filter-out cpu,$(ACCEL)),$(comma)$(ACCEL))
# One stamp per set of extras, so that another ACCEL or extra installs again.
stamp = $(VENV)/.installed-$(subst $(comma),+,$(1))
SETUP_STAMP := $(call stamp,dev$(ACCEL_EXTRA))
# The test suite and `make bench` also install torch, the PyTorch references' extra: one built for
# the same CUDA major as jax's plugin (bench-cuda12 beside cuda12).
BENCH_EXTRA := $(if $(filter cuda12,$(ACCEL)),bench-cuda12,bench)
BENCH_STAMP := $(call stamp,dev$(comma)$(BENCH_EXTRA)$(ACCEL_EXTRA))

.PHONY: setup data demo test test-fast lint format bench wheels clean

setup: $(SETUP_STAMP) data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The bench extra (PyTorch) at the versions the suite runs with, .ci/torch.txt (not with cuda12).
TORCH_PIN = $(if $(findstring +bench+,$*+),-c .ci/torch.txt)

$(VENV)/.installed-%: pyproject.toml .ci/torch.txt | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PIN) -e '.[$(subst +,$(comma),$*)]'
	@touch $@

# Real data offline: Debian's dataset-fashion-mnist package (needs root and apt).
data:
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] || [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte ]; then \
	  echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) && \
	  echo "installed dataset-fashion-mnist into $(FMNIST_DIR)"; \
	else \
	  echo "No Fashion-MNIST in $(FMNIST_DIR). Get it with 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu),"; \
	  echo "or put the four IDX files in a directory and pass --config.idx_dir=DIR (or set AIGC_JAX_IDX_DIR),"; \
	  echo "or let TFDS download it where a network exists (the default fallback)."; \
	fi

# Each family at its best in under 5 minutes on a 2-core CPU: the MLP VAE's whole experiment (10
# epochs), then the GAN that draws recognisable items soonest, the self-conditioned DCGAN (600
# steps at learning rate 1e-3, with the mode-seeking term so that samples vary within a cluster;
# docs/results.md has the variants tried). Its evaluation trains the metrics' classifier once
# (~1.5 min) if ~/.cache/aigc_jax has none. Then a table: model, steps, main metric beside its
# floor, the pictures.
demo: setup
	$(PY) experiments/vae_mlp_fashion_mnist.py --workdir $(DEMO_DIR)/vae_mlp
	$(PY) experiments/dcgan_self_conditioned_fashion_mnist.py --workdir $(DEMO_DIR)/dcgan_self_conditioned \
	  --config.num_train_steps=600 --config.eval_every_steps=600 --config.learning_rate=0.001 \
	  --config.mode_seeking_weight=1.0 --config.eval_num_samples=1000
	$(PY) -m aigc_jax.demo_summary $(DEMO_DIR)/vae_mlp $(DEMO_DIR)/dcgan_self_conditioned --num_samples 1000

# The suite in parallel (pytest-xdist): TEST_WORKERS processes (0: serial, in this process),
# TEST_DIST how xdist hands them tests. PYTEST_ARGS adds options, e.g. PYTEST_ARGS='-k vae -x'.
TEST_WORKERS ?= auto
TEST_DIST ?= load
PYTEST := $(PY) -m pytest tests --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) \
  --dist $(TEST_DIST)) $(PYTEST_ARGS)

# AIGC_JAX_TEST_ACCELERATOR=1 then runs the `accelerator` tests on JAX's default backend (a GPU
# or TPU), in one process; the rest of the suite keeps its CPU devices.
test: $(BENCH_STAMP) data
	$(PYTEST)
	$(if $(filter-out 0,$(AIGC_JAX_TEST_ACCELERATOR)),$(PY) -m pytest tests -m accelerator -p no:xdist)

# Everything but the tests marked `slow` (training runs, subprocesses, many compiles): about a
# minute on 2 cores.
test-fast: $(BENCH_STAMP) data
	$(PYTEST) -m "not slow"

# Lint: ruff check, and the formatting that `make format` applies (yapf); rules in pyproject.toml.
LINTED := aigc_jax tests benchmarks experiments
lint: $(SETUP_STAMP)
	$(PY) -m ruff check $(LINTED)
	@$(PY) -m yapf --diff --recursive --parallel $(LINTED) > $(VENV)/format.diff || \
	  { cat $(VENV)/format.diff; echo "error: these files are not formatted; run 'make format'"; exit 1; }

format: $(SETUP_STAMP)
	$(PY) -m yapf --in-place --recursive --parallel $(LINTED)

# JAX vs PyTorch eager train steps for every experiment; writes benchmarks/RESULTS.md (~15 min).
bench: $(BENCH_STAMP) data
	$(PY) -m aigc_jax.bench --torch --table benchmarks/RESULTS.md

# wheels/ for benchmarks/accelerator_check.sh on an offline GPU machine (Python $(WHEEL_PYTHON), x86-64)
# that already has jax, flax, optax, orbax-checkpoint, chex and torch: binary wheels of the rest
# and their dependencies, plus wheels built here from the dependencies PyPI has as sdists only
# (WHEEL_SDIST_ONLY, pure Python). WHEELS_DIR picks another directory.
WHEEL_PYTHON ?= 3.12
WHEELS_DIR ?= wheels
WHEEL_PACKAGES := ml_collections tensorboardX tensorflow-datasets importlib_resources tqdm absl-py \
  Pillow matplotlib scipy pytest
WHEEL_SDIST_ONLY := promise
wheels: | $(PY)
	$(PY) -m pip wheel --quiet --no-deps -w $(WHEELS_DIR) $(WHEEL_SDIST_ONLY)
	$(PY) -m pip download --quiet -d $(WHEELS_DIR) --only-binary=:all: --find-links $(WHEELS_DIR) \
	  --python-version $(WHEEL_PYTHON) --platform manylinux2014_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
	  $(WHEEL_PACKAGES)

clean:
	rm -rf $(VENV) runs .pytest_cache
