"""Per-example noise that does not depend on how many devices share the batch."""

from __future__ import annotations

from typing import Callable

import jax


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
  return jax.lax.dynamic_slice_in_dim(full,
                                      jax.lax.axis_index(axis_name) * local, local, batch_axis)
