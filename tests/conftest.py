"""Shared fixtures. Tests that need real data skip cleanly where Fashion-MNIST is absent."""

import os

import jax
import pytest

# Four fake CPU devices for the data-parallel tests (set before JAX starts its backend; the other
# tests run on the first device as before).
jax.config.update("jax_num_cpu_devices", 4)

from aigc_jax import data as data_lib  # noqa: E402

FASHION_DIR = data_lib.DATASETS["fashion_mnist"].debian_dir


def has_fashion_mnist() -> bool:
  return os.path.isdir(FASHION_DIR) and any(
      name.startswith("t10k-labels") for name in os.listdir(FASHION_DIR))


needs_fashion_mnist = pytest.mark.skipif(
    not has_fashion_mnist(),
    reason=f"Fashion-MNIST not in {FASHION_DIR} (make setup installs dataset-fashion-mnist)")
