"""The immutable train state every family carries through its pure steps."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  """step, params, optimizer state, model state (e.g. batch statistics) and the base rng.

  Per-step randomness is `step_rng(state)`: `fold_in(rng, step)`, so a resumed run draws the same
  numbers as an unbroken one. `rng` is a raw uint32 key so it checkpoints as a plain array.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, apply_fn, params, tx, rng, model_state=None) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               model_state={} if model_state is None else model_state, rng=rng,
               apply_fn=apply_fn, tx=tx)

  def apply_gradients(self, grads, **changes) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, **changes)


def adam(config, total_steps: int, learning_rate: float | None = None) -> optax.GradientTransformation:
  """Adam with the config's betas and schedule over `total_steps` updates; the learning rate is
  `learning_rate`, or config.learning_rate when None."""
  peak = config.learning_rate if learning_rate is None else learning_rate
  learning_rate = peak
  if config.lr_schedule == "cosine":
    learning_rate = optax.cosine_decay_schedule(peak, max(1, total_steps))
  return optax.adam(learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def ema_update(ema_params, params, decay):
  """decay * ema + (1 - decay) * params, leaf by leaf (Polyak averaging; StyleGAN's EMA generator)."""
  return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def warmed_up_ema_decay(decay: float, step: jax.Array) -> jax.Array:
  """min(decay, (1 + step) / (10 + step)): early averages do not drag the untrained init along."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def total_train_steps(config, num_train_examples: int, batches_per_step: int = 1) -> int:
  """num_train_steps when > 0, else num_epochs full epochs (the last partial step dropped).

  A step consumes `batches_per_step` batches of `batch_size` (a GAN: one per critic update).
  """
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(config.num_epochs) * (num_train_examples // (config.batch_size * batches_per_step))


def step_rng(state: TrainState) -> jax.Array:
  """The rng of this step: fold_in(rng, step). Draw per-example noise from it with `batch_noise`."""
  return jax.random.fold_in(state.rng, state.step)


def batch_noise(sampler: Callable, rng: jax.Array, shape, axis_name: str | None = None,
                batch_axis: int = 0) -> jax.Array:
  """`sampler(rng, shape)` for this device's rows of the global batch.

  Under a named data axis of n devices, `shape[batch_axis]` is the per-device batch: the noise of
  the whole global batch (n times as many rows) is drawn and this device keeps its rows, so every
  example gets the same numbers whatever the device count (1 device draws exactly the same).
  """
  if axis_name is None:
    return sampler(rng, tuple(shape))
  local = shape[batch_axis]
  full_shape = list(shape)
  full_shape[batch_axis] = local * jax.lax.axis_size(axis_name)
  full = sampler(rng, tuple(full_shape))
  return jax.lax.dynamic_slice_in_dim(full, jax.lax.axis_index(axis_name) * local, local,
                                      batch_axis)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


class GANState(flax.struct.PyTreeNode):
  """Generator and discriminator parameters, optimizer states and mutable collections.

  `g_stats` / `d_stats` hold the 'batch_stats' collections (BatchNorm statistics and spectral
  normalization's power-iteration vectors); `ema_params` is the moving average of `g_params`,
  used for sampling and evaluation.
  """

  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  g_stats: Any
  d_stats: Any
  ema_params: Any
  rng: jax.Array
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
