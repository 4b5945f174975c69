"""Configs: the shared keys every family understands, plus validation.

Keys are flat, in the style of the Flax examples, and mean the same thing in every family.
A family adds its own keys through `families.get(model).default_config()`. `validate` runs once,
at the boundary: a misspelt key or a bad value fails there with a sentence saying how to fix it.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import ml_collections

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import user_data
from aigc_jax.suggest import unknown_key_message


class ConfigError(ValueError):
  """A config key or value that cannot work; the message names the key and the fix."""


INT_RANGE = (-2**31, 2**31 - 1)  # int keys become int32 arrays, shapes and step counts


def type_problem(value: Any, default: Any) -> str | None:
  """Why `value` cannot stand for a key whose default is `default` (None when it can): a bool
  for a bool, an int in INT_RANGE for an int, a finite number for a float, a string for a
  string, a list or tuple of such elements for a tuple."""
  if isinstance(default, bool):
    return None if isinstance(value, bool) else "not true or false"
  if isinstance(default, int):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      return "not an integer"
    low, high = INT_RANGE
    return None if low <= value <= high else f"out of the range {low} to {high}"
  if isinstance(default, float):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return "not a number"
    return None if math.isfinite(value) else "not a finite number"
  if isinstance(default, str):
    return None if isinstance(value, str) else "not a string"
  if isinstance(default, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      return "not a list"
    problems = (type_problem(v, default[0]) for v in value) if default else ()
    problem = next((p for p in problems if p is not None), None)
    return None if problem is None else f"a list with an element that is {problem}"
  return None


def check_types(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
  """Raises ConfigError naming the first key of `values` (known to `defaults`) whose value is not
  of its default's type (`type_problem`)."""
  for key, value in values.items():
    problem = type_problem(value, defaults[key]) if key in defaults else None
    if problem is not None:
      shown = repr(value.to_dict() if hasattr(value, "to_dict") else value)  # a ConfigDict
      shown = shown if len(shown) <= 60 else shown[:57] + "..."
      raise ConfigError(f"{key} is {shown}, {problem}; give it a value like its default "
                        f"{defaults[key]!r}")


def base_config() -> dict:
  """Keys shared by every model family, with their defaults."""
  return dict(
      model="",  # family member, e.g. 'vae_mlp'; set by the family's get_config
      **_data_keys(),
      scale="zero_one",  # 'zero_one' or 'minus_one_one'
      binarize=False,  # dynamic binarization of training images
      batch_size=128,
      eval_batch_size=1000,
      num_epochs=10,  # used when num_train_steps <= 0
      num_train_steps=-1,  # > 0 overrides num_epochs
      learning_rate=1e-3,
      lr_schedule="constant",  # or 'cosine': decay to 0 over the run's total steps
      adam_b1=0.9,
      adam_b2=0.999,
      adam_eps=1e-8,  # Adam's epsilon (optax's default)
      seed=0,
      # Train steps per device dispatch (lax.fori_loop; see parallel.py); 0 = auto: 1 on CPU,
      # where convolutions inside loop bodies are slow, 100 on GPUs and TPUs.
      steps_per_call=0,
      compute_dtype="float32",  # or 'bfloat16': activations; params, losses, statistics float32
      matmul_precision="default",  # 'high' or 'highest' (full float32 matmuls on GPUs and TPUs)
      # 'none' (jit, one device), 'pmap' or 'shard_map' (data parallel, all devices); 'auto':
      # data parallel over this process's devices on a GPU or TPU with several, else 'none'
      parallel="auto",
      # Multi-host: coordinator_address is 'host:port' of process 0 ('' = the
      # JAX_COORDINATOR_ADDRESS environment variable, or none); num_processes / process_id:
      # 0 / -1 = detected from the cluster environment (SLURM, Open MPI, TPU pods).
      coordinator_address="",
      num_processes=0,
      process_id=-1,
      log_every_steps=100,
      eval_every_steps=-1,  # <= 0: once per epoch
      checkpoint_every_steps=-1,  # <= 0: at every evaluation
      keep_checkpoints=3,  # the last N are kept, plus the best by the family's eval metric
      early_stopping_patience=0,  # evaluations without improvement before stopping; 0 = off
      num_sample_images=64,
      progress_bar=True,
      # On resume, keys that change what the run computes (seed, batch size, model, ...) are
      # refused unless this is True; the changes are then recorded (metrics.jsonl, config.json).
      allow_config_change=False,
  )


def _data_keys() -> dict:
  """The keys that choose the data and the shape of its images."""
  return dict(
      # 'fashion_mnist', 'mnist', 'cifar10', 'folder:PATH' (PNG/JPEG files; subfolders are
      # classes) or 'tfds:NAME[:SPLIT]' (a TFDS image dataset prepared in tfds_data_dir)
      dataset="fashion_mnist",
      idx_dir="",  # a directory of IDX files; '' = the env var, the Debian dir, then TFDS
      tfds_data_dir="",  # where TFDS keeps (or would download) its data; '' = TFDS default
      # folder: and tfds: datasets: images centre-cropped to image_size x image_size with
      # `channels` (1 or 3) channels, resized by 'area' or 'bicubic' (0: a folder's 64 and 3,
      # a TFDS dataset's own shape)
      image_size=0,
      channels=0,
      resize="area",
      # A train split of more bytes (uint8 images) streams from its source a chunk at a time
      # (`streaming`) instead of living on device whole; 1 streams any split
      max_device_bytes=2_000_000_000,
      decode_workers=0,  # a streamed folder's decoding: 0 on threads, N > 0 in N processes
  )


def get_config(model: str, **overrides) -> ml_collections.ConfigDict:
  """The full default config of `model` (shared keys + family keys), with overrides applied."""
  family = families.get(model)
  values = base_config()
  values.update(family.default_config(model))
  values["model"] = model
  for key, value in overrides.items():
    if key not in values:
      raise ConfigError(unknown_key_message(key, values))
    values[key] = value
  return ml_collections.ConfigDict(values)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks keys and values; returns the config unchanged or raises ConfigError."""
  try:
    family = families.get(config.get("model", ""))
  except KeyError as e:
    raise ConfigError(str(e.args[0])) from None
  known = base_config()
  known.update(family.default_config(config.model))
  for key in config.keys():
    if key not in known:
      raise ConfigError(unknown_key_message(key, known))
  for key in known:
    if key not in config:
      raise ConfigError(f"config key '{key}' is missing; start from "
                        f"aigc_jax.config.get_config('{config.model}')")
  check_types(config, known)
  _check_values(config, family)
  return config


def _check_data(config: ml_collections.ConfigDict, need) -> None:
  """`need(ok, message)` of each key that chooses the data and its images' shape."""
  need(config.resize in ("area", "bicubic"), f"resize '{config.resize}' is unknown; use 'area' or "
       "'bicubic'")
  need(config.channels in (0, 1, 3), f"channels must be 1, 3 or 0 (the dataset's own), got "
       f"{config.channels}")
  for key in ("image_size", "decode_workers"):
    need(config[key] >= 0, f"{key} must be >= 0, got {config[key]}")
  need(config.max_device_bytes >= 1, f"max_device_bytes must be >= 1, got "
       f"{config.max_device_bytes}")
  need(
      config.dataset in data_lib.DATASETS or user_data.is_user_dataset(config.dataset),
      f"dataset '{config.dataset}' is unknown; choose one of {sorted(data_lib.DATASETS)}, "
      "'folder:PATH' or 'tfds:NAME[:SPLIT]'")


def _check_values(config: ml_collections.ConfigDict, family) -> None:
  """ConfigError for the first value out of its range or set of choices."""

  def need(ok: bool, message: str):
    if not ok:
      raise ConfigError(message)

  _check_data(config, need)
  need(config.scale in ("zero_one", "minus_one_one"),
       f"scale '{config.scale}' is unknown; use 'zero_one' or 'minus_one_one'")
  need(not (config.binarize and config.scale != "zero_one"),
       "binarize=True needs scale='zero_one' (pixels are Bernoulli probabilities)")
  for key in ("batch_size", "eval_batch_size", "log_every_steps", "num_sample_images"):
    need(int(config[key]) > 0, f"{key} must be a positive integer, got {config[key]}")
  need(
      int(config.steps_per_call) >= 0,
      f"steps_per_call must be >= 0 (0 = auto for the backend), got {config.steps_per_call}")
  need(config.compute_dtype in backend.COMPUTE_DTYPES,
       f"compute_dtype '{config.compute_dtype}' is unknown; use one of {backend.COMPUTE_DTYPES}")
  need(
      config.matmul_precision in backend.MATMUL_PRECISIONS,
      f"matmul_precision '{config.matmul_precision}' is unknown; use one of "
      f"{backend.MATMUL_PRECISIONS}")
  need(config.num_train_steps > 0 or config.num_epochs > 0,
       "set num_train_steps > 0 or num_epochs > 0 (num_train_steps wins when both are set)")
  need(config.learning_rate > 0, f"learning_rate must be > 0, got {config.learning_rate}")
  need(config.lr_schedule in ("constant", "cosine"),
       f"lr_schedule '{config.lr_schedule}' is unknown; use 'constant' or 'cosine'")
  try:
    backend.forced_platform()  # starts no backend: jax.distributed may come after
  except backend.PlatformError as e:
    raise ConfigError(str(e)) from None
  need(config.parallel in ("auto",) + backend.PARALLEL_MODES,
       f"parallel '{config.parallel}' is unknown; use 'auto', 'none', 'pmap' or 'shard_map'")
  need(config.num_processes >= 0 and config.process_id >= -1,
       "num_processes must be >= 0 and process_id >= -1 (0 and -1: from the environment)")
  need(config.keep_checkpoints >= 1,
       f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
  need(config.early_stopping_patience >= 0,
       f"early_stopping_patience must be >= 0 (0 = off), got {config.early_stopping_patience}")
  family.validate_config(config, need)


def from_saved(
    values: Mapping[str, Any], where: str,
    fix: str = "edit the file, restore it from a backup, or use a new --workdir"
) -> ml_collections.ConfigDict:
  """The validated config of `values` as a run file holds them (config.json, a sweep's spec):
  keys added to the project since take their defaults; a value of the wrong type, a bad value
  or an unknown key raises ConfigError naming `where`, the key and the problem (then `fix`)."""
  values = dict(values)
  model = values.pop("model", "")
  try:
    if not isinstance(model, str):
      raise ConfigError(f"model is {model!r}, not a model name such as 'vae_mlp'")
    return validate(get_config(model, **values))
  except (KeyError, ConfigError) as e:
    raise ConfigError(f"{where}: {e.args[0]}" + f" ({fix})" * bool(fix)) from None


def load_experiment(path: str) -> ml_collections.ConfigDict:
  """The `get_config()` of the experiment file at `path`; raises ConfigError when there is none."""
  if not (os.path.isfile(path) and path.endswith(".py")):
    raise ConfigError(f"{path} is not an experiment file; name one such as "
                      "experiments/vae_mlp_fashion_mnist.py")
  name = os.path.basename(path)[:-3]
  spec = importlib.util.spec_from_file_location(f"experiments.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config(); an experiment file defines one")
  return module.get_config()


def parse_value(key: str, text: str, default):
  """`text` as a value of `default`'s type: true/false for booleans, the text itself for strings,
  else a Python literal (a number, a tuple). Raises ConfigError naming the key."""
  if isinstance(default, bool):
    if text.lower() not in ("true", "false"):
      raise ConfigError(f"--config.{key} takes true or false, got '{text}'")
    return text.lower() == "true"
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(f"--config.{key}={text}: not a {type(default).__name__}") from None
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(default, int) and not (number and float(value).is_integer()):
    raise ConfigError(f"--config.{key}={text}: not an int")
  if isinstance(default, float) and not number:
    raise ConfigError(f"--config.{key}={text}: not a float")
  if isinstance(default, tuple) and not isinstance(value, (tuple, list)):
    raise ConfigError(f"--config.{key}={text}: not a tuple such as {default!r} (one value: "
                      f"({text},))")
  return type(default)(value) if isinstance(default, (int, float, tuple)) else value


def apply_overrides(config, args: Sequence[str]) -> list[str]:
  """Applies every '--config.KEY=VALUE' (or '--config.KEY VALUE') of `args` to `config` in
  place; returns the other arguments. Raises ConfigError for an unknown key or a bad value."""
  rest, args = [], list(args)
  while args:
    arg = args.pop(0)
    if not arg.startswith("--config."):
      rest.append(arg)
      continue
    key, has_value, text = arg[len("--config."):].partition("=")
    if not has_value:
      if not args:
        raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
      text = args.pop(0)
    if key not in config:
      raise ConfigError(f"{unknown_key_message(key, config.keys())} (in {arg})")
    config[key] = parse_value(key, text, config[key])
  return rest
