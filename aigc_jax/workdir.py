"""A run's directory: its config, its checkpoints, and rebuilding a trained model from both."""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import ml_collections

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax.checkpoint import CheckpointError
from aigc_jax.checkpoint import Checkpoints

CONFIG_FILE = "config.json"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def open_checkpoints(workdir: str, config, trainable: families.Trainable) -> Checkpoints:
  return Checkpoints(checkpoint_dir(workdir), keep_last=config.keep_checkpoints,
                     best_metric=f"test_{trainable.best_metric}", best_mode=trainable.best_mode)


def save_config(workdir: str, config) -> None:
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{path} not found: --workdir must be a directory written by an "
                          "experiment (python experiments/NAME.py --workdir DIR)")
  with open(path) as f:
    saved = json.load(f)
  try:  # keys added to the project after the run was written take their defaults
    config = config_lib.get_config(saved.pop("model", ""), **saved)
  except (KeyError, config_lib.ConfigError) as e:
    raise config_lib.ConfigError(f"{path}: {e.args[0]}") from None
  return config_lib.validate(config)


class TrainedRun(NamedTuple):
  config: ml_collections.ConfigDict
  info: data_lib.DatasetInfo
  trainable: families.Trainable
  state: object
  step: int


def load_trained(workdir: str, which: str = "best") -> TrainedRun:
  """Rebuilds the model of `workdir` and restores its best (or 'latest') checkpoint."""
  config = load_config(workdir)
  info = data_lib.DATASETS[config.dataset]
  trainable = families.get(config.model).build(config, info)  # schedule unused: no training
  ckpts = open_checkpoints(workdir, config, trainable)
  try:
    step = ckpts.best_step() if which == "best" else None
    step = ckpts.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}: train first "
                            f"(python experiments/NAME.py --workdir {workdir})")
    template = jax.eval_shape(trainable.init, jax.random.PRNGKey(config.seed))
    state = ckpts.restore(template, step)
  finally:
    ckpts.close()
  return TrainedRun(config, info, trainable, state, step)


def load_test_data(config) -> data_lib.DeviceData:
  return data_lib.to_device(*data_lib.load_config_split(config, "test"))
