# `make demo` and `make test` work on a fresh clone: they run `setup` first when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo

.PHONY: setup data demo test bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

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

# A conv VAE (1000 steps), then a DCGAN (400 steps at batch 32; its evaluation trains the
# metrics' classifier once, ~2 min, if ~/.cache/aigc_jax has none) and its FID etc. with floors.
demo: setup
	$(PY) experiments/vae_conv_fashion_mnist.py --workdir $(DEMO_DIR)/vae_conv --config.num_train_steps=1000 \
	  --config.batch_size=32 --config.eval_every_steps=500
	$(PY) experiments/dcgan_fashion_mnist.py --workdir $(DEMO_DIR)/dcgan --config.num_train_steps=400 \
	  --config.batch_size=32 --config.learning_rate=5e-4 --config.ema_decay=0.99 \
	  --config.eval_every_steps=400 --config.eval_num_samples=1000
	$(PY) -m aigc_jax.evaluate --workdir $(DEMO_DIR)/dcgan --num_samples 1000
	@echo "demo sample grids: $(DEMO_DIR)/vae_conv/samples/samples_latest.png," \
	  "$(DEMO_DIR)/vae_conv/samples/reconstructions_latest.png, $(DEMO_DIR)/dcgan/samples/samples_latest.png"

test: setup
	$(PY) -m pytest tests

# JAX vs PyTorch eager train steps for every experiment; writes benchmarks/RESULTS.md (~15 min).
bench: setup
	$(PY) -m aigc_jax.benchmark --torch --table benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) runs .pytest_cache
