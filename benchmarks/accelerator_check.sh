#!/usr/bin/env bash
# The accelerator check on a fresh, offline GPU or TPU machine whose Python already has jax (with
# its GPU or TPU plugin), flax, optax, orbax-checkpoint and chex (and torch, for the PyTorch
# columns): installs aigc_jax and its missing pure-Python dependencies from wheels/ (filled by
# `make wheels` on a machine with a network), then runs benchmarks/accelerator_check.py.
#
#   AIGC_JAX_IDX_DIR=/path/to/fashion-mnist benchmarks/accelerator_check.sh OUTDIR [--tiny] \
#     [--budget_s S]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "$#" -lt 1 ]; then
  echo "error: usage: benchmarks/accelerator_check.sh OUTDIR [--tiny] [--budget_s S]" >&2
  exit 2
fi
# Every third-party module the package imports when it loads, trains, evaluates or reads data
# (tensorflow_datasets only where no IDX files are found), and pytest for the accelerator tests;
# then the pip names to install where one is missing.
MODULES="absl flax jax optax orbax.checkpoint chex ml_collections numpy scipy PIL matplotlib tqdm \
tensorboardX tensorflow_datasets importlib_resources grain pytest"
PACKAGES="absl-py ml_collections scipy Pillow matplotlib tqdm tensorboardX tensorflow-datasets \
importlib_resources grain pytest"
if ! "$PYTHON" -c "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]" \
    $MODULES 2>/dev/null; then
  if [ ! -d wheels ]; then
    echo "error: a module aigc_jax needs ($MODULES) is missing and there is no wheels/" \
      "directory; run 'make wheels' where a network exists and copy wheels/ here" >&2
    exit 2
  fi
  # shellcheck disable=SC2086  # one word per package
  "$PYTHON" -m pip install -q --no-index --find-links wheels $PACKAGES
fi
exec "$PYTHON" benchmarks/accelerator_check.py "$@"
