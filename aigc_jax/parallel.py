"""Running one per-device train step on a single device, under `jax.pmap`, or under `jax.shard_map`.

`make_train_loop(train_step, ..., mode)` turns a pure per-device `train_step(state, batch,
axis_name)` into a `TrainLoop` that runs a chunk of steps per device dispatch over the on-device
dataset. The three modes run the SAME step function:

- 'none': `jax.jit` on one device; `axis_name` is None.
- 'pmap': the state replicated with a leading device axis; collectives (gradient means,
  BatchNorm statistics) run over `DATA_AXIS`.
- 'shard_map': `jax.jit` of `jax.shard_map` over a 1-D mesh of all devices named `DATA_AXIS`;
  the state is replicated on the mesh.

Under both parallel modes the dataset is split by rows over the devices (`Placement.put_rows`),
not copied: each device gathers the rows it holds of a global batch, and a reduce-scatter hands
every device its slice of that batch (`gather_rows`), the same rows as one device would read.
With several processes (`jax.distributed`) they span every device of every process, and each
process loads (`local_rows`) and places only its devices' rows. Per-step noise is drawn for the
global batch and sliced (`batch_noise`), so results do not depend on the number of devices.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import placement
from aigc_jax import state as state_lib

log = logging.getLogger(__name__)

DATA_AXIS = placement.DATA_AXIS  # the device axis the step's collectives run over


def batch_at(state, data, perm, index, *, batch_size: int, batches_per_step: int, local_batch: int,
             scale: str, binarize: bool, axis_name: str | None):
  """This device's rows of global batches index*n ... index*n + n - 1 (n = batches_per_step) of
  the epoch permutation `perm`, preprocessed (binarized with the state's step noise if asked).
  Under `axis_name`, `data` holds this device's block of rows (`Placement.put_data`)."""
  offsets = (index * batches_per_step + jnp.arange(batches_per_step)) * batch_size
  if axis_name is None:
    idx = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(perm, o, local_batch))(offsets)
    rows = jax.tree_util.tree_map(lambda x: jnp.take(x, idx.reshape(-1), axis=0), data)
  else:  # (n, D, L) global rows -> device-major, so that device d gets [:, d, :]
    idx = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(perm, o, batch_size))(offsets)
    idx = idx.reshape(batches_per_step, -1, local_batch).swapaxes(0, 1).reshape(-1)
    rows = gather_rows(data, idx, axis_name)
  rng = None
  if binarize:
    rng = jax.random.fold_in(state_lib.stream_rng(state, state_lib.BINARIZE_STREAM), state.step)
  image = data_lib.preprocess(rows.images, scale=scale, binarize_rng=rng, axis_name=axis_name)
  return {"image": image, "label": rows.labels}


def gather_rows(data, idx, axis_name: str):
  """Rows `idx` (dataset indices, the same on every device) of a dataset split over `axis_name`
  in blocks (device d holds rows [d*R, (d+1)*R)): device d gets block d of `idx`'s rows.

  Every device gathers the rows it holds, zeros elsewhere, and a reduce-scatter sums them: one
  term per row is not zero, so the sum is that row exactly, whatever its integer dtype.
  """
  local = idx - jax.lax.axis_index(axis_name) * data.labels.shape[0]
  mine = (local >= 0) & (local < data.labels.shape[0])
  local = jnp.where(mine, local, 0)

  def gather(x):
    got = jnp.take(x, local, axis=0)
    got = jnp.where(mine.reshape((-1,) + (1,) * (x.ndim - 1)), got, jnp.zeros((), x.dtype))
    return jax.lax.psum_scatter(got, axis_name, scatter_dimension=0, tiled=True)

  return jax.tree_util.tree_map(gather, data)


class TrainLoop:
  """`loop(state, data, perm, start, num_steps) -> (state, metric sums)` over the devices of its
  `place` (a `placement.Placement`).

  Step i of a call trains on global batch `start + i` of the epoch permutation `perm`; the metric
  sums (already averaged over devices) are over the `num_steps` steps; `state` is donated.
  `state`, `data` and `perm` are in the loop's placement: pass them through `place.put_state`,
  `place.put_data` and `place.put_state` first, and get a single-copy state (for checkpoints,
  sampling, evaluation) with `place.get_state`.

  With `batches_per_step` n > 1, step s trains on global batches s*n ... s*n + n - 1: its batch
  holds this device's rows of each, one after the other (n * local rows), so a step that splits
  it into n batches sees the same examples in each whatever the device count.

  With `members` ('vmap' or 'unroll'), the state and `perm` stack the members of a population
  on a leading axis (`population.Member`): the step is vmapped over them, or traced once per
  member in one program ('unroll': XLA:CPU runs vmapped convolutions on a slow path), and the
  metric sums are per member. In mode 'none', vmapped members are sharded over up to
  `member_devices` of this process's devices (0: all; 1: one device): over the most of them that
  divides the population's size, each running its share of the members. Place the stacked state
  and `perm` with `place.put_state`, the shared data with `place.put_data(tree, members=N)`.

  With `steps_per_call` K > 1, up to K steps run inside one `lax.fori_loop` dispatch (the trip
  count is traced, so a shorter chunk does not recompile). With K = 1 every step is one
  dispatch: XLA:CPU runs convolutions inside loop bodies on a slow path (jax#12868), so
  convolutional models use K = 1 on CPU. K = 0 is auto
  (`backend.steps_per_call`).
  """

  def __init__(self, train_step: Callable, *, batch_size: int, scale: str, binarize: bool,
               steps_per_call: int, mode: str, devices=None, batches_per_step: int = 1,
               members: str = "", member_devices: int = 1):
    pool = jax.local_devices() if members == "vmap" and mode == "none" else []
    self.place = placement.Placement(
        mode, [jax.local_devices()[0]] if mode == "none" else list(devices or jax.devices()),
        pool[:member_devices or len(pool)])
    if batch_size % self.place.num_devices:
      raise ValueError(
          f"batch_size {batch_size} is not divisible by the {self.place.num_devices} devices of "
          f"parallel='{mode}'; use a multiple of {self.place.num_devices}")
    self.steps_per_call = backend.steps_per_call(steps_per_call)
    axis = None if mode == "none" else DATA_AXIS
    batch = functools.partial(batch_at, batch_size=batch_size, batches_per_step=batches_per_step,
                              local_batch=batch_size // self.place.num_devices, scale=scale,
                              binarize=binarize, axis_name=axis)
    step_kwargs = {} if axis is None else {"axis_name": axis}

    def one_step(state, data, perm, index):
      return train_step(state, batch(state, data, perm, index), **step_kwargs)

    if members:  # a stacked population: each member's state with its own data order
      one_step = member_map(one_step, members)

    def loop(state, data, perm, start, num_steps):

      def body(i, carry):
        state, metrics = one_step(carry[0], data, perm, start + i)
        return state, jax.tree_util.tree_map(jnp.add, carry[1], metrics)

      shapes = jax.eval_shape(one_step, state, data, perm, start)[1]
      zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
      return jax.lax.fori_loop(0, num_steps, body, (state, zeros))

    # One step per dispatch traces and compiles the step once; its metrics are summed by a
    # separate tiny add (which also sums the chunks of the K-step loop), so the step's trace is
    # not repeated to learn the metrics' shapes.
    self._one = self._wrap(one_step, 1)  # (state, data, perm, index)
    self._add = jax.jit(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), donate_argnums=0)
    self._loop = self._wrap(loop, 2)  # (state, data, perm, start, num_steps)

  def _wrap(self, fn: Callable, scalars: int) -> Callable:
    """`fn(state, data, perm, *scalars)` compiled for the mode, the state donated: state, data
    and perm placed per device (`placement.Placement`), the trailing step indices scalars."""
    mode, devices = self.place.mode, self.place.devices
    if mode == "none":
      return jax.jit(fn, donate_argnums=0)
    if mode == "pmap":
      return jax.pmap(fn, DATA_AXIS, in_axes=(0, 0, 0) + (None,) * scalars, donate_argnums=0,
                      devices=devices)
    # check_vma=False: gradients of the replicated parameters stay per device, as under pmap,
    # and the step's own pmean averages them (with the check on, shard_map's autodiff would
    # already sum them over devices, and the same step code would count them twice).
    # The state and `perm` replicated, the dataset (argument 1) split by rows (`put_data`).
    specs = (PartitionSpec(), PartitionSpec(DATA_AXIS)) + (PartitionSpec(),) * (1 + scalars)
    return jax.jit(
        jax.shard_map(fn, mesh=self.place.mesh, in_specs=specs, out_specs=PartitionSpec(),
                      check_vma=False), donate_argnums=0)

  def __call__(self, state, data, perm, start: int, num_steps: int):
    if self.steps_per_call == 1:
      sums = None
      for i in range(num_steps):
        state, metrics = self._one(state, data, perm, np.int32(start + i))
        sums = metrics if sums is None else self._add(sums, metrics)
      return state, self.place.get_state(sums)
    sums = None
    for offset in range(0, num_steps, self.steps_per_call):
      n = min(self.steps_per_call, num_steps - offset)
      state, chunk = self._loop(state, data, perm, np.int32(start + offset), np.int32(n))
      sums = chunk if sums is None else self._add(sums, chunk)
    return state, self.place.get_state(sums)


def member_map(one_step: Callable, how: str) -> Callable:
  """`one_step(state, data, perm, index)` over stacked states and perms: 'vmap' or 'unroll'."""
  if how == "vmap":
    return jax.vmap(one_step, in_axes=(0, None, 0, None))
  if how != "unroll":
    raise ValueError(f"members '{how}' is unknown; use 'vmap' or 'unroll'")

  def unrolled(state, data, perm, index):
    outs = [
        one_step(jax.tree_util.tree_map(lambda x, i=i: x[i], state), data, perm[i], index)
        for i in range(perm.shape[0])
    ]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)

  return unrolled


def make_train_loop(train_step: Callable, *, batch_size: int, scale: str = "zero_one",
                    binarize: bool = False, steps_per_call: int = 1, mode: str = "none",
                    devices=None, batches_per_step: int = 1, members: str = "",
                    member_devices: int = 1) -> TrainLoop:
  """The `TrainLoop` of `train_step(state, batch, axis_name=None)` in `mode` (one of
  `backend.PARALLEL_MODES`)."""
  loop = TrainLoop(train_step, batch_size=batch_size, scale=scale, binarize=binarize,
                   steps_per_call=steps_per_call, mode=mode, devices=devices,
                   batches_per_step=batches_per_step, members=members,
                   member_devices=member_devices)
  if mode == "pmap" and loop.place.num_devices == 1:
    log.info("parallel='pmap' on a single device: it runs, but 'none' does the same work "
             "without the device axis")
  return loop
