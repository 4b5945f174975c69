"""Running a per-device train step: many steps per dispatch, batches cut on the device.

`make_train_loop` turns a pure per-device `train_step(state, batch)` into one jitted call that
runs a traced number of steps with `lax.fori_loop` over the on-device dataset, so the host
neither touches the data nor waits on every step, and a new chunk length never recompiles.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from aigc_jax import data as data_lib

BINARIZE_STREAM = 3  # fold_in constant of the dynamic-binarization noise


def make_train_loop(train_step: Callable, *, batch_size: int, scale: str = "zero_one",
                    binarize: bool = False, steps_per_call: int = 1) -> Callable:
  """Returns `run(state, data, perm, start, num_steps) -> (state, metric sums)`.

  Step i of a call trains on batch `start + i` of the epoch permutation `perm`; the metric sums
  are over the `num_steps` steps (divide by it for means); `state` is donated.
  With `steps_per_call` K > 1, up to K steps run inside one `lax.fori_loop` dispatch (the trip
  count is traced, so a shorter chunk does not recompile). With K = 1 every step is one jitted
  dispatch: XLA:CPU runs convolutions inside loop bodies on a slow path (jax#12868, measured 8x
  slower here for the conv VAE), so convolutional models use K = 1 on CPU.
  """

  def batch_at(state, data, perm, index):
    rng = None
    if binarize:
      rng = jax.random.fold_in(jax.random.fold_in(state.rng, BINARIZE_STREAM), state.step)
    return data_lib.get_batch(data, perm, index, batch_size, scale=scale, binarize_rng=rng)

  def step_and_add(state, sums, data, perm, index):
    state, metrics = train_step(state, batch_at(state, data, perm, index))
    return state, jax.tree_util.tree_map(jnp.add, sums, metrics)

  def zero_sums(state, data, perm):
    shapes = jax.eval_shape(lambda s: train_step(s, batch_at(s, data, perm, 0))[1], state)
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

  def loop(state, data, perm, start, num_steps):
    def body(i, carry):
      return step_and_add(*carry, data, perm, start + i)
    return jax.lax.fori_loop(0, num_steps, body, (state, zero_sums(state, data, perm)))

  one_step = jax.jit(step_and_add, donate_argnums=(0, 1))
  zeros = jax.jit(zero_sums)
  loop = jax.jit(loop, donate_argnums=0)

  def run(state, data, perm, start, num_steps):
    if steps_per_call == 1:
      sums = zeros(state, data, perm)
      for i in range(num_steps):
        state, sums = one_step(state, sums, data, perm, start + i)
      return state, sums
    sums = None
    for offset in range(0, num_steps, steps_per_call):
      n = min(steps_per_call, num_steps - offset)
      state, chunk = loop(state, data, perm, start + offset, n)
      sums = chunk if sums is None else jax.tree_util.tree_map(jnp.add, sums, chunk)
    return state, sums

  return run
