"""A run's directory: its config, its checkpoints, and rebuilding a trained model from both."""

from __future__ import annotations

import json
import logging
import os
from typing import NamedTuple

import jax
import ml_collections

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import entry
from aigc_jax import families
from aigc_jax import safe_files
from aigc_jax.checkpoint import CheckpointError
from aigc_jax.checkpoint import Checkpoints
from aigc_jax.checkpoint import remove_unfinished

CONFIG_FILE = "config.json"
HISTORY = "history"  # config.json's list of the changes made at resumes
# Keys a run may change when it resumes: how long it trains, how often it logs, evaluates and
# checkpoints, where its data files are, how it spreads over devices, what it shows.
RESUMABLE_KEYS = frozenset({
    "num_epochs", "num_train_steps", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "early_stopping_patience", "idx_dir",
    "tfds_data_dir", "parallel", "steps_per_call", "coordinator_address", "num_processes",
    "process_id", "progress_bar", "num_sample_images", "eval_batch_size", "eval_num_samples",
    "eval_iwae_samples", "eval_iwae_examples", "allow_config_change", "decode_workers"
})
log = logging.getLogger(__name__)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def open_checkpoints(workdir: str, config, trainable: families.Trainable,
                     write: bool = True) -> Checkpoints:
  """The run's checkpoints; to `write` them (the workdir locked), a link or a file at their
  folder is refused, and the unfinished saves that a full disk or a kill left are removed."""
  directory = safe_files.make_dir(checkpoint_dir(workdir)) if write else checkpoint_dir(workdir)
  if write and jax.process_index() == 0:
    for name in remove_unfinished(directory):
      log.warning("removed %s: a save that was cut short", os.path.join(directory, name))
  return Checkpoints(directory, keep_last=config.keep_checkpoints,
                     best_metric=f"test_{trainable.best_metric}", best_mode=trainable.best_mode)


def save_config(workdir: str, config, changes: dict | None = None, step: int = 0) -> None:
  """Writes config.json; with `changes` ({key: [old, new]}) made at a resume from `step`, they
  are appended to its "history" list, which is kept from the previous config.json. The file is
  replaced whole; a link there is replaced, neither read nor followed."""
  path = os.path.join(workdir, CONFIG_FILE)
  own = os.path.isfile(path) and not os.path.islink(path)
  history = read_config_json(path).get(HISTORY, []) if own else []
  if changes:
    history = history + [{"step": step, "changes": changes}]
  values = json.loads(config.to_json())
  if history:
    values[HISTORY] = history
  safe_files.write_text(path, json.dumps(values, indent=2))


def read_config_json(path: str) -> dict:
  """The JSON object of a config.json; raises ConfigError when it is not one."""
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError, RecursionError) as e:
    raise config_lib.ConfigError(f"{path} cannot be read as JSON ({e}); restore it from a "
                                 "backup or use a new --workdir") from None
  if not isinstance(saved, dict):
    raise config_lib.ConfigError(f"{path} is not a JSON object; restore it from a backup or use "
                                 "a new --workdir")
  history = saved.get(HISTORY, [])
  if not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
    raise config_lib.ConfigError(f"{path}: '{HISTORY}' is not the list of changes made at "
                                 "resumes that this file keeps; restore it from a backup, or "
                                 f"remove '{HISTORY}'")
  return saved


def has_checkpoints(workdir: str) -> bool:
  directory = checkpoint_dir(workdir)
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def check_resume_config(workdir: str, config) -> dict:
  """{key: [saved, new]} for the keys outside RESUMABLE_KEYS that differ from the config a run
  with checkpoints was trained with ({} for a new run): allowed by config.allow_config_change,
  else the first raises ConfigError naming the key."""
  if not (os.path.exists(os.path.join(workdir, CONFIG_FILE)) and has_checkpoints(workdir)):
    return {}
  saved = load_config(workdir)
  if saved.model != config.model:  # its checkpoints hold another network: no change allows it
    files = " or ".join(f"experiments/{n}" for n in _experiments_of(saved.model))
    raise config_lib.ConfigError(
        f"{workdir} holds a {saved.model} run, not a {config.model} one; train {config.model} "
        f"in a new --workdir, or resume this run with its own config" +
        (f" (e.g. {files})" if files else ""))
  changes = {
      key: [saved[key], config[key]] for key in config.keys()
      if key in saved and json.dumps(saved[key]) != json.dumps(config[key])
  }
  refused = [key for key in changes if key not in RESUMABLE_KEYS]
  if refused and not config.allow_config_change:
    key = refused[0]
    raise config_lib.ConfigError(
        f"--config.{key}={config[key]!r} differs from the {saved[key]!r} that the run in "
        f"{workdir} was trained with, and changes what it computes; resume with the same value, "
        "set --config.allow_config_change=True to change it (recorded in metrics.jsonl and "
        "config.json), or use a new --workdir")
  return {key: changes[key] for key in refused}


def _experiments_of(model: str, most: int = 2) -> list[str]:
  """Up to `most` experiment files named after `model` (experiments/MODEL_*.py)."""
  directory = entry.EXPERIMENTS_DIR
  names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  return [n for n in names if n.startswith(f"{model}_") and n.endswith(".py")][:most]


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{path} not found: --workdir must be a directory written by an "
                          "experiment (python experiments/NAME.py --workdir DIR)")
  saved = read_config_json(path)
  saved.pop(HISTORY, None)
  return config_lib.from_saved(saved, path)  # keys added since the run take their defaults


# A tool's option (sample, evaluate) -> the config key it sets for that call; a model whose
# config lacks the key has no such option.
TOOL_OPTIONS = {
    "iwae_samples": "eval_iwae_samples", "iwae_examples": "eval_iwae_examples",
    "num_samples": "eval_num_samples", "sampler": "sampler", "sample_steps": "sample_steps",
    "guidance_scale": "guidance_scale"
}


def check_tool_options(config, options: dict) -> None:
  """Raises ConfigError when one of a tool's `options` does not apply to the run's model, or
  has a value the run's config would refuse for its key."""
  trial = ml_collections.ConfigDict(config.to_dict())
  for name, value in options.items():
    key = TOOL_OPTIONS[name]
    if key not in config:
      raise config_lib.ConfigError(f"--{name} does not apply to model '{config.model}'; drop it")
    trial[key] = value
  try:
    config_lib.validate(trial)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"{e} (from --{', --'.join(options)})") from None


class TrainedRun(NamedTuple):
  config: ml_collections.ConfigDict
  info: data_lib.DatasetInfo
  trainable: families.Trainable
  state: object
  step: int


def load_trained(workdir: str, which: str | int = "best") -> TrainedRun:
  """Rebuilds the model of `workdir` and restores a verified checkpoint: step `which` when it is
  an int, else the best ('best') or the newest ('latest'); when that one does not verify, the
  newest one that does (with a warning)."""
  config = load_config(workdir)
  info = data_lib.config_info(config)
  trainable = families.get(config.model).build(config, info)  # schedule unused: no training
  ckpts = open_checkpoints(workdir, config, trainable, write=False)
  try:
    if ckpts.latest_step() is None:
      raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}: train first "
                            f"(python experiments/NAME.py --workdir {workdir})")
    template = jax.eval_shape(trainable.init, jax.random.PRNGKey(config.seed))
    if isinstance(which, int):
      return TrainedRun(config, info, trainable, ckpts.restore(template, which), which)
    best = ckpts.best_step() if which == "best" else None
    try:
      if best is not None:
        return TrainedRun(config, info, trainable, ckpts.restore(template, best), best)
    except CheckpointError as e:
      log.warning("the best checkpoint does not verify (%s); using the newest that does", e)
    state, step = ckpts.restore_verified(template)
  finally:
    ckpts.close()
  return TrainedRun(config, info, trainable, state, step)


def load_test_data(config) -> data_lib.DeviceData:
  return data_lib.to_device(*data_lib.load_config_split(config, "test"))
