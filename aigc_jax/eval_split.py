"""A split evaluated in whole batches of a fixed size, shared out between processes.

Each process loads only `process_rows`: whole batches, the first ones on process 0. `batches`
yields its batches with their index in the whole split (the key of their noise), and `totals`
adds up per-batch sums in batch order, gathered from every process, so that a metric of the
split is the same number for any process count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from aigc_jax import data as data_lib


class EvalData(NamedTuple):
  """Rows [first_row, first_row + N) of a split of `size` rows (0: N, the whole split)."""

  images: jax.Array  # uint8 (N, H, W, C)
  labels: jax.Array  # int32 (N,)
  first_row: int = 0
  size: int = 0


def split_size(data: data_lib.DeviceData | EvalData) -> int:
  """The number of rows of the whole split that `data` holds some (or all) of."""
  return getattr(data, "size", 0) or int(data.labels.shape[0])


def num_batches(size: int, batch_size: int) -> int:
  return -(-size // batch_size)


def process_rows(size: int, batch_size: int, process: int | None = None,
                 count: int | None = None) -> tuple[int, int]:
  """[start, stop): the rows of a split of `size` rows that `process` (default: this one) of
  `count` evaluates: an equal share of its batches of `batch_size`, in order."""
  process = jax.process_index() if process is None else process
  count = jax.process_count() if count is None else count
  per = -(-num_batches(size, batch_size) // count)
  return min(size, process * per * batch_size), min(size, (process + 1) * per * batch_size)


@functools.partial(jax.jit, static_argnames=("scale",))
def _batch(images: jax.Array, labels: jax.Array, idx: jax.Array, mask: jax.Array,
           scale: str) -> dict[str, jax.Array]:
  return {
      "image": data_lib.preprocess(jnp.take(images, idx, axis=0), scale=scale),
      "label": jnp.take(labels, idx, axis=0),
      "mask": mask,
  }


def batches(data: data_lib.DeviceData | EvalData, batch_size: int, *,
            scale: str = "zero_one") -> Iterator[tuple[int, dict[str, jax.Array]]]:
  """(index in the whole split, batch) of the rows `data` holds, in order: fixed-size batches,
  the split's last one padded, with 'mask' 0 on padding."""
  if batch_size <= 0:
    raise data_lib.DataError(f"eval batch_size must be positive (got {batch_size}); "
                             "set a positive --config.batch_size")
  first = getattr(data, "first_row", 0)
  if first % batch_size:
    raise ValueError(f"rows from {first} do not start a batch of {batch_size}")
  n = int(data.labels.shape[0])
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size, dtype=np.int32)
    mask = (idx < n).astype(np.float32)
    yield (first + start) // batch_size, _batch(data.images, data.labels, np.where(idx < n, idx, 0),
                                                mask, scale)


def totals(data: data_lib.DeviceData | EvalData, batch_size: int, scale: str,
           sums: Callable[[int, dict],
                          Mapping[str, jax.Array]], keys: tuple[str, ...]) -> dict[str, float]:
  """{key: the sum over the split's batches of `sums(index, batch)[key]`}, added in batch order
  in float64 after every process's batches are gathered: the same for any process count. Every
  process calls it (the gather is collective)."""
  table = np.zeros((num_batches(split_size(data), batch_size), len(keys)))
  for index, batch in batches(data, batch_size, scale=scale):
    got = jax.device_get(sums(index, batch))
    table[index] = [got[k] for k in keys]
  if jax.process_count() > 1:  # each row is one process's; the others' are zeros
    table = np.sum(multihost_utils.process_allgather(table), axis=0)
  return dict(zip(keys, (float(v) for v in np.sum(table, axis=0))))
