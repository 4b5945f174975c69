#!/usr/bin/env bash
# The accelerator check on a fresh, offline GPU or TPU machine whose Python already has jax (with
# its GPU or TPU plugin), flax, optax, orbax-checkpoint and chex (and torch, for the PyTorch
# columns): installs aigc_jax and its missing pure-Python dependencies from wheels/ (filled by
# `make wheels` on a machine with a network), then runs benchmarks/accelerator_check.py.
#
#   AIGC_JAX_IDX_DIR=/path/to/fashion-mnist benchmarks/accelerator_check.sh OUTDIR [--tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "$#" -lt 1 ]; then
  echo "error: usage: benchmarks/accelerator_check.sh OUTDIR [--tiny]" >&2
  exit 2
fi
if ! "$PYTHON" -c "import ml_collections, tensorboardX, tensorflow_datasets" 2>/dev/null; then
  if [ ! -d wheels ]; then
    echo "error: ml_collections, tensorboardX or tensorflow_datasets is missing and there is no" \
      "wheels/ directory; run 'make wheels' where a network exists and copy wheels/ here" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --find-links wheels ml_collections tensorboardX \
    tensorflow-datasets importlib_resources tqdm
fi
exec "$PYTHON" benchmarks/accelerator_check.py "$@"
