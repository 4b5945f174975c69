"""The immutable train state every family carries through its pure steps."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


class Player(flax.struct.PyTreeNode):
  """One network's trainable state: its params, optimizer state, model state (mutable collections
  such as BatchNorm statistics and spectral-norm vectors) and optimizer (static)."""

  params: Any
  opt_state: Any
  model_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, model_state=None) -> "Player":
    return cls(params=params, opt_state=tx.init(params),
               model_state={} if model_state is None else model_state, tx=tx)

  def apply_gradients(self, grads, model_state=None) -> "Player":
    """One optimizer update of the params; `model_state` replaces the model state when given."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state,
                        model_state=self.model_state if model_state is None else model_state)


class TrainState(flax.struct.PyTreeNode):
  """What every family's train step carries: the step, the base rng, the players by name and the
  moving average of the sampled player's params (`ema_params`, {} when a run keeps none).

  Per-step randomness is `step_rng(state)`: `fold_in(rng, step)`, so a resumed run draws the same
  numbers as an unbroken one. `rng` is a raw uint32 key so it checkpoints as a plain array.
  """

  step: jax.Array
  rng: jax.Array
  players: dict[str, Player]
  ema_params: Any

  @classmethod
  def create(cls, rng: jax.Array, ema_params=None, **players: Player) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), rng=rng, players=players,
               ema_params={} if ema_params is None else ema_params)


def with_ema(state: TrainState, params, decay: float) -> Any:
  """The state's `ema_params` moved toward `params` at the warmed-up decay of its step ({} when
  the state keeps none)."""
  if not jax.tree_util.tree_leaves(state.ema_params):
    return state.ema_params
  return ema_update(state.ema_params, params, warmed_up_ema_decay(decay, state.step))


def adam(config, total_steps: int,
         learning_rate: float | None = None) -> optax.GradientTransformation:
  """Adam with the config's betas and schedule over `total_steps` updates; the learning rate is
  `learning_rate`, or config.learning_rate when None."""
  peak = config.learning_rate if learning_rate is None else learning_rate
  learning_rate = peak
  if config.lr_schedule == "cosine":
    learning_rate = optax.cosine_decay_schedule(peak, max(1, total_steps))
  return optax.adam(learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def ema_update(ema_params, params, decay):
  """decay * ema + (1 - decay) * params, leaf by leaf (Polyak averaging, StyleGAN's EMA G)."""
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


# The noise streams kept apart from training's `step_rng`: draw i of a stream is
# fold_in(fold_in(state.rng, STREAM), i) (`stream_rng`).
EVAL_STREAM = 1  # the periodic evaluation's fixed noise (the same at every evaluation)
SAMPLE_STREAM = 2  # the fixed-noise sample grids
BINARIZE_STREAM = 3  # dynamic binarization of a batch (drawn per step)
IWAE_STREAM = 101  # the importance-weighted bound's samples


def step_rng(state) -> jax.Array:
  """The rng of this step: fold_in(rng, step). Draw per-example noise from it with
  `noise.batch_noise`."""
  return jax.random.fold_in(state.rng, state.step)


def stream_rng(state, stream: int) -> jax.Array:
  """The base rng of one of the named noise streams; draw i is fold_in of it with i."""
  return jax.random.fold_in(state.rng, stream)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
