"""Every experiment file trains on the CPU under a GPU's and a TPU's defaults.

`AIGC_JAX_PLATFORM_DEFAULTS=gpu|tpu` makes every `auto` choice (formulations, steps per call,
the parallel mode over the suite's 4 CPU devices) what it is on that accelerator, so the paths
an accelerator runs execute here: a few dozen steps in one multi-step call, one evaluation with
its sample metrics, one checkpoint. Widths are shrunk (XLA:CPU runs convolutions inside loop
bodies on a slow path), the rest is each experiment's own; data is a small IDX set.
"""

import glob
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
from helpers import write_idx

from aigc_jax import backend
from aigc_jax import train
from aigc_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(ROOT, "experiments", "*_fashion_mnist.py")))
STEPS = 12


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  """64 train / 32 test random 28x28 images with labels."""
  directory = tmp_path_factory.mktemp("idx")
  rng = np.random.default_rng(0)
  for prefix, n in (("train", 64), ("t10k", 32)):
    write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
  return str(directory)


def experiment_config(name: str, idx_dir: str):
  """The experiment's own config, shortened to STEPS steps with one evaluation at the end."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  small = dict(idx_dir=idx_dir, batch_size=8, eval_batch_size=16, d_base_features=8,
               g_base_features=16, hidden_dim=32, latent_dim=8, conv_features=(8,
                                                                               16), base_features=8,
               num_train_steps=STEPS, steps_per_call=0, parallel="auto", log_every_steps=STEPS,
               eval_every_steps=STEPS, progress_bar=False, num_sample_images=4, eval_num_samples=10,
               sample_steps=2, eval_iwae_samples=2, eval_iwae_examples=4, classifier_samples=0)
  for key, value in small.items():
    if key in config:
      if key == "eval_num_samples" and config[key] == 0:
        continue  # an experiment without sample metrics keeps them off
      config[key] = value
  return config


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_under_accelerator_defaults(name, idx_dir, cache_dir, tmp_path,
                                                      monkeypatch, caplog):
  """Under a GPU's defaults, then a TPU's in the same process (they choose the same programs, so
  the second run reuses what the first compiled)."""
  monkeypatch.setenv("AIGC_JAX_CACHE", cache_dir)
  for platform in ("gpu", "tpu"):
    monkeypatch.setenv(backend.PLATFORM_ENV, platform)
    workdir = str(tmp_path / platform)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aigc_jax.train"):
      metrics = train.train_and_evaluate(experiment_config(name, idx_dir), workdir)
    setup_line = next(r.getMessage() for r in caplog.records if "platform=" in r.getMessage())
    assert f"platform={platform} (emulated on cpu)" in setup_line
    assert f"steps_per_call={backend.AUTO_STEPS_PER_CALL}" in setup_line
    assert f"parallel={backend.AUTO_PARALLEL}" in setup_line and "4 device(s)" in setup_line
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "test"] == [STEPS]
    assert workdir_lib.load_trained(workdir, "latest").step == STEPS
