"""Where a train loop's arrays live: the state replicated (or a population's stacked states
sharded over member devices), the dataset split by rows over the data axis, and the single copy
read back for checkpoints, sampling and evaluation, for each parallel mode ('none', 'pmap',
'shard_map'; see `parallel`). With several processes each places, and loads, only its devices'
parts."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from aigc_jax import backend

DATA_AXIS = "data"
MEMBER_AXIS = "members"


class Placement:
  """The placement of one mode over `devices` (the data axis; one device for 'none'), with
  `member_pool`: the devices a vmapped population may be sharded over in mode 'none'."""

  def __init__(self, mode: str, devices: list, member_pool: list = ()):
    if mode not in backend.PARALLEL_MODES:
      raise ValueError(f"parallel mode '{mode}' is unknown; use one of {backend.PARALLEL_MODES}")
    self.mode, self.devices, self.member_pool = mode, list(devices), list(member_pool)
    self.num_devices = len(self.devices)
    self.mesh = jax.sharding.Mesh(np.array(self.devices), (DATA_AXIS,))

  def member_mesh(self, num_members: int) -> jax.sharding.Mesh | None:
    """The mesh that `num_members` members are sharded over in mode 'none' (None: one device)."""
    size = max((k for k in range(1, len(self.member_pool) + 1) if num_members % k == 0), default=1)
    return None if size == 1 else jax.sharding.Mesh(np.array(self.member_pool[:size]),
                                                    (MEMBER_AXIS,))

  def put_state(self, tree: Any) -> Any:
    """A single-copy pytree (state or data) placed for this loop: replicated on its devices.

    For 'pmap' that is one copy per device stacked on a leading device axis; every process passes
    the same values and places its own devices' copies. A population's stacked tree (state,
    `perm`) is sharded over its members' devices (`member_mesh`).
    """
    # Fresh buffers for every leaf: the state is donated, and two leaves may share one array
    # (e.g. the EMA parameters start as the generator's), which donation would reject.
    fresh = lambda t: jax.tree_util.tree_map(jnp.copy, t)  # noqa: E731
    if self.mode == "none":
      mesh = (self.member_mesh(len(jax.tree_util.tree_leaves(tree)[0]))
              if self.member_pool else None)
      if mesh is not None:
        return fresh(jax.device_put(tree, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))))
      return fresh(jax.device_put(tree, self.devices[0]))
    if self.mode == "shard_map":  # from host values: a committed array (e.g. a restored
      # checkpoint) put onto other processes' devices would be a cross-host transfer
      host = jax.device_get(tree)
      return fresh(jax.device_put(host, NamedSharding(self.mesh, PartitionSpec())))
    stacked = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
    local = sum(d.process_index == jax.process_index() for d in self.devices)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(
            stacked, np.broadcast_to(np.asarray(x), (local,) + np.shape(x))), tree)

  def put_data(self, tree: Any, members: int = 0, *, first_row: int = 0,
               num_examples: int = 0) -> Any:
    """`tree` (the dataset: host or device arrays of its rows `local_rows`, from `first_row` of
    `num_examples`, by default all) placed for this loop: on its device ('none'), on a
    population's devices (`members`), or split by rows over the data axis (`put_rows`)."""
    mesh = self.member_mesh(members) if self.member_pool and members else None
    if mesh is not None:
      return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
    if self.mode == "none":
      return jax.device_put(tree, self.devices[0])
    return self.put_rows(tree, first_row=first_row, num_examples=num_examples)

  def rows_per_device(self, num_examples: int) -> int:
    """R: device d of the data axis holds rows [d*R, (d+1)*R) of a dataset (zeros past its end)."""
    return -(-num_examples // self.num_devices)

  def local_rows(self, num_examples: int) -> tuple[int, int]:
    """[start, stop): the rows of a dataset of `num_examples` that this process's devices hold
    (all of them unless the data is split by rows), which is all this process needs to load."""
    if self.mode == "none":
      return 0, num_examples
    per, local = self.rows_per_device(num_examples), self._local_positions()
    return min(num_examples, min(local) * per), min(num_examples, (max(local) + 1) * per)

  def put_rows(self, tree: Any, *, first_row: int = 0, num_examples: int = 0) -> Any:
    """`tree`'s leaves, rows [first_row, ...) of a dataset of `num_examples` (by default their
    own N rows), split in blocks of `rows_per_device` rows over the loop's devices, the last
    block padded with zero rows that no index reaches. Each process places only its devices'
    blocks (`local_rows`); under pmap every block is one entry of the leading device axis."""
    per = self.rows_per_device(num_examples or len(jax.tree_util.tree_leaves(tree)[0]))
    rows = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    def place(x):
      x = np.asarray(x)
      blocks = []
      for d in self._local_positions():
        block = x[max(0, d * per - first_row):max(0, (d + 1) * per - first_row)]
        block = np.concatenate([block, np.zeros((per - len(block),) + x.shape[1:], x.dtype)])
        blocks.append(jax.device_put(block[None] if self.mode == "pmap" else block,
                                     self.devices[d]))
      shape = ((self.num_devices, per) if self.mode == "pmap" else
               (self.num_devices * per,)) + x.shape[1:]
      return jax.make_array_from_single_device_arrays(shape, rows, blocks)

    return jax.tree_util.tree_map(place, tree)

  def _local_positions(self) -> list[int]:
    return [
        d for d, device in enumerate(self.devices) if device.process_index == jax.process_index()
    ]

  def get_state(self, tree: Any) -> Any:
    """The single copy (on this process's first device) of a pytree placed by this loop."""
    if self.mode == "pmap":
      return jax.tree_util.tree_map(lambda x: x.addressable_data(0)[0], tree)
    if self.mode == "shard_map":
      return jax.tree_util.tree_map(lambda x: x.addressable_data(0), tree)
    return jax.device_put(tree, self.devices[0]) if self.member_pool else tree
