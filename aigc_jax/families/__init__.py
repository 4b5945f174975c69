"""Model families plug into the loop through one small record of functions, `Trainable`.

A family module exposes `default_config(model) -> dict` (its keys and defaults),
`validate_config(config, need)`, `batches_per_step(config) -> int` (the batches of `batch_size`
one train step consumes), `train_labels(config, train images, labels, workdir=None, rows=None)
-> labels` (what the train step sees as labels; the images are the train split's rows [start,
stop) where `rows` is given) and `build(config, info, total_steps) -> Trainable`, which
binds the family's module-level pure functions (its `train_step` above all) to its networks and
config. The model names map to family modules here.

The sweep contract: `PROGRAM_KEYS` names the float keys whose value chooses the program (an
`if config.x:` in the family, e.g. a loss weight whose 0 turns its term off); every other float
key enters the train step as a value, traced when a sweep varies it between members
(`population.member_step`), and sweeps refuse to vary the program keys.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax

from aigc_jax import state as state_lib

MODELS = {
    "vae_mlp": "aigc_jax.families.vae",
    "vae_conv": "aigc_jax.families.vae",
    "gan_mlp": "aigc_jax.families.gan",
    "dcgan": "aigc_jax.families.gan",
    "unet": "aigc_jax.families.diffusion",
}


class Trainable(NamedTuple):
  """What the training loop, the sampler and the evaluator need from a family."""

  init: Callable[[Any], Any]  # rng -> TrainState
  # (state, batch, axis_name=None) -> (state, metrics); pure, per device. With batches_per_step
  # n > 1 the batch holds n batches, one after the other (see parallel.TrainLoop).
  train_step: Callable[..., Any]
  evaluate: Callable[..., dict]  # (state, test DeviceData) -> {name: float}; the periodic eval
  # (state, test DeviceData, **options) -> {name: value}; what `python -m aigc_jax.evaluate` prints
  full_evaluate: Callable[..., dict]
  sample: Callable[..., Any]  # (state, rng, num) -> (images in [0, 1] (N,H,W,C) np, labels or None)
  log_images: Callable[..., dict]  # (state, test DeviceData) -> {name: (images (N,H,W,C), ncols)}
  best_metric: str  # a key of `evaluate`'s result
  best_mode: str  # 'min' or 'max'
  # ((player name, its optax transformation as `init` gives it), ...): hashable, like the rest
  optimizers: tuple


def one_batch_per_step(config) -> int:
  """`batches_per_step` of a family whose step reads one batch."""
  del config
  return 1


def dataset_labels(config, images, labels, workdir=None, rows=None):
  """`train_labels` of a family that trains on the dataset's labels as they are."""
  del config, images, workdir, rows
  return labels


SAMPLE_CHUNK = 1000  # images per sampling call (chunk c drawn from fold_in(rng, c))


def pmean(tree, axis_name: str | None):
  """The mean of `tree` over the devices of `axis_name`; `tree` itself on one device."""
  return jax.lax.pmean(tree, axis_name) if axis_name else tree


def eval_params(state, player: str):
  """The parameters evaluation and sampling use: their moving average when the run keeps one
  (ema_decay > 0), else `player`'s trained parameters."""
  return state.ema_params or state.players[player].params


def single_player_step(state, player: str, loss_fn: Callable, ema_decay: float,
                       axis_name: str | None):
  """One optimizer step of `player` on `loss_fn(params) -> (loss, metrics)` (gradients and
  metrics averaged over `axis_name`), the moving average's, and the step count's."""
  trained = state.players[player]
  grads, metrics = pmean(jax.grad(loss_fn, has_aux=True)(trained.params), axis_name)
  trained = trained.apply_gradients(grads)
  ema = state_lib.with_ema(state, trained.params, ema_decay)  # {} when the run keeps no EMA
  return state.replace(step=state.step + 1, players={player: trained}, ema_params=ema), metrics


def get(model: str) -> ModuleType:
  if model not in MODELS:
    raise KeyError(f"model '{model}' is unknown; choose one of {sorted(MODELS)}")
  return importlib.import_module(MODELS[model])
