"""The models a benchmark runs: experiment presets and the config each is timed with.

A model is NAME for experiments/NAME_fashion_mnist.py; its config is that file's `get_config()`
with the benchmark's overrides (batch size, steps per call, parallel mode, --config.KEY=VALUE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import aigc_jax
from aigc_jax import backend
from aigc_jax import config as config_lib

EXPERIMENTS_DIR = Path(aigc_jax.__file__).resolve().parents[1] / "experiments"
EXPERIMENT_SUFFIX = "_fashion_mnist.py"
ALIASES = {"mlp_gan": "gan_mlp"}  # other accepted spellings -> the preset's name


class BenchmarkError(ValueError):
  """A benchmark that cannot run as asked; the message says why."""


def model_names() -> list[str]:
  """The experiment presets, sorted: NAME for every experiments/NAME_fashion_mnist.py."""
  return sorted(
      p.name[:-len(EXPERIMENT_SUFFIX)] for p in EXPERIMENTS_DIR.glob(f"*{EXPERIMENT_SUFFIX}"))


def canonical_name(name: str) -> str:
  """The preset's name for `name` or one of its ALIASES (`mlp_gan` -> `gan_mlp`)."""
  return ALIASES.get(name, name)


def experiment_config(name: str):
  """The `get_config()` of experiments/NAME_fashion_mnist.py (`mlp_gan` is `gan_mlp`); raises
  BenchmarkError naming the presets when there is no such file."""
  name = canonical_name(name)
  path = EXPERIMENTS_DIR / f"{name}{EXPERIMENT_SUFFIX}"
  if not path.is_file():
    names = model_names()
    if not names:
      raise BenchmarkError(f"no experiments in {EXPERIMENTS_DIR}: run from a checkout of the repo")
    raise BenchmarkError(f"unknown model '{name}'; choose one of {', '.join(names)}")
  return config_lib.load_experiment(str(path))


def bench_config(name: str, batch: int | None = None, steps_per_call: int | None = None,
                 parallel_mode: str = "none", overrides: Sequence[str] = ()):
  """The preset's config with `overrides` applied in order, then `batch`, `steps_per_call` (None:
  the preset's) and `parallel_mode`; validated, with steps_per_call resolved (never 0). Raises
  BenchmarkError for an invalid result."""
  config = experiment_config(name)
  try:
    rest = config_lib.apply_overrides(config, overrides)
  except config_lib.ConfigError as e:
    raise BenchmarkError(str(e)) from None
  if rest:
    raise BenchmarkError(f"unrecognized argument '{rest[0]}'; config overrides are "
                         "--config.KEY=VALUE")
  if batch is not None:
    config.batch_size = batch
  if steps_per_call is not None:
    config.steps_per_call = steps_per_call
  config.parallel = parallel_mode
  try:
    config = config_lib.validate(config)
  except config_lib.ConfigError as e:
    raise BenchmarkError(str(e)) from None
  config.steps_per_call = backend.steps_per_call(config.steps_per_call)  # 0: auto, resolved
  return config
