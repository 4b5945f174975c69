"""Prints how far test_parallel's checks are from failing (not a test module itself).

python tests/parity_margins.py   (optionally under XLA_FLAGS=--xla_cpu_max_isa=AVX, ...)

For every parity case: the worst leaf ratio ||parallel - single|| / ||single - init|| after SGD
steps (limit REL), of Adam's moments after one step (limit REL), and the worst Adam step
difference / learning rate where the gradient is not ~0 (limit 0.1); then the same numbers for
each planted bug, which must exceed the limits.
"""

import os

import numpy as np
import pytest

import conftest  # noqa: F401  (4 fake CPU devices)
import test_parallel as tp


def worst(got, want, init):
  ratio = 0.0
  for _, (g, w, i) in tp.float_leaves(got, want, init):
    moved, off = np.linalg.norm(w - i), np.linalg.norm(g - w)
    ratio = max(ratio, off / moved if moved > 0 else (0.0 if off == 0 else np.inf))
  return ratio


def adam_worst(got, want, init, learning_rate):
  moments, steps = 0.0, 0.0
  for trees, params in tp.adam_trees(got, want, init):
    moments = max(moments, worst(*trees))
    for _, (g, w, m) in tp.float_leaves(*params):
      sure = np.abs(m) > tp.NOT_ZERO * np.abs(m).max()
      if sure.any():
        steps = max(steps, np.abs(g - w)[sure].max() / learning_rate)
  return moments, steps


def main():
  print("XLA_FLAGS", os.environ.get("XLA_FLAGS", "(default)"))
  for model, overrides, steps in tp.CASES:
    lr = tp.config_lib.get_config(model).learning_rate
    init, want, _ = tp.single_device(model, overrides, steps=steps, optimizer="sgd")
    sgd = max(
        worst(tp.train(model, overrides, mode, steps, "sgd")[1], want, init)
        for mode in ("pmap", "shard_map"))
    init, want, _ = tp.single_device(model, overrides, steps=1, optimizer="adam")
    moments, sure = adam_worst(tp.train(model, overrides, "pmap", 1, "adam")[1], want, init, lr)
    print(
        f"{model:8s} {dict(overrides)}: sgd {sgd:.2e}  adam moments {moments:.2e}  "
        f"adam sure steps/lr {sure:.2e}", flush=True)
  lr = tp.config_lib.get_config("dcgan").learning_rate
  for bug in ("missing_pmean", "batchnorm_not_averaged", "same_noise_on_every_device",
              "device_0s_rows"):
    with pytest.MonkeyPatch.context() as patch:
      wrap = tp.plant(bug, patch)
      init, want, _ = tp.single_device("dcgan", (), steps=3, optimizer="sgd")
      sgd = worst(tp.train("dcgan", (), "pmap", 3, "sgd", wrap)[1], want, init)
      init, want, _ = tp.single_device("dcgan", (), steps=1, optimizer="adam")
      moments, sure = adam_worst(tp.train("dcgan", (), "pmap", 1, "adam", wrap)[1], want, init, lr)
    print(
        f"bug {bug:28s}: sgd {sgd:.2e}  adam moments {moments:.2e}  adam sure steps/lr "
        f"{sure:.2e}", flush=True)


if __name__ == "__main__":
  main()
