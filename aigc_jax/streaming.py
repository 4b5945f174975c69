"""The train split streamed from its source a chunk at a time, for data larger than
`max_device_bytes`, in exactly the order of the on-device path.

Epoch e's order is `data.epoch_permutation(seed, e, N)`, as on device. A chunk of n steps
starting at step `index` of the epoch is rows perm[index*R : (index+n)*R] (R rows per step),
laid out as the on-device loop reads an epoch, padded to `steps_per_call` steps so that its shape
never changes; the loop then reads it with the identity order (`order`) from its start. Each
process reads only the rows its devices hold of each chunk (`Placement.local_rows`): a folder's
files decoded on grain threads or in `decode_workers` worker processes, a `tfds:` split's records
read at random; the built-in datasets are loaded whole on the host. The next chunk is read while
the loop trains on this one; the step alone gives the position, so resuming from a checkpoint
streams the same rows.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import math
import multiprocessing
import os
import threading
from typing import Protocol

import jax
import numpy as np

from aigc_jax import data as data_lib
from aigc_jax import entry
from aigc_jax import image_folder
from aigc_jax import tfds_split
from aigc_jax import user_data

log = logging.getLogger(__name__)


class RowSource(Protocol):
  """Random access to a split: `source[i]` is (uint8 (H, W, C) image, int label), and
  `read(rows)` is (uint8 (n, H, W, C) images, int32 (n,) labels) of those rows, in order."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
    ...

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ...


class ArraySource:
  """Rows of in-memory arrays (a split already loaded on the host)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
    return self.images[i], int(self.labels[i])

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[rows], self.labels[rows].astype(np.int32)


class RecordSource:
  """Rows of a TFDS split (`tfds.data_source`: random access), fitted to the run's image shape
  when read: a process reads only the rows it is given."""

  def __init__(self, records, shape: tuple[int, int, int], resize: str):
    self.records, self.shape, self.resize = records, shape, resize

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
    return user_data.fit_record(self.records[i], self.shape, self.resize)

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return user_data.stacked([
        user_data.fit_record(r, self.shape, self.resize)
        for r in tfds_split.read_rows(self.records, [int(i) for i in rows])
    ], self.shape)


class FolderSource:
  """Rows of an image folder's listing, decoded when read: by grain's threads in this process
  (`workers` 0) or by `workers` worker processes (which end when this process does, however it
  ends). An unusable file is replaced by the next usable one of the listing
  (`image_folder.usable`: the same one every time) and reported once."""

  def __init__(self, listing: image_folder.Listing, size: int, channels: int, resize: str,
               workers: int = 0):
    self.listing, self.shape = listing, (size, channels, resize)
    self.skipped: dict[str, str] = {}
    self.threads = min(8, os.cpu_count() or 1)
    self._lock = threading.Lock()
    self.workers, self._pool = workers, None

  def __len__(self) -> int:
    return len(self.listing.paths)

  def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
    return self._reported(image_folder.usable(self.listing, i, *self.shape))

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if self.workers and self._pool is None:  # started at the first read, ended with this process
      self._pool = concurrent.futures.ProcessPoolExecutor(
          self.workers, mp_context=multiprocessing.get_context("spawn"),
          initializer=image_folder.start_worker, initargs=(self.listing, *self.shape, os.getpid()))
      self._forget = entry.undo_on_signal(self.close)  # a stop signal or error ends them too
    if self._pool is not None:
      chunk = max(1, len(rows) // (4 * self.workers))
      got = [
          self._reported(r)
          for r in self._pool.map(image_folder.usable_in_worker, map(int, rows), chunksize=chunk)
      ]
    else:
      import grain  # pylint: disable=g-import-not-at-top  (only a streamed run needs it)
      got = list(
          grain.MapDataset.source(rows).map(lambda i: self[int(i)]).to_iter_dataset(
              grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=4 * self.threads)))
    size, channels, _ = self.shape
    return user_data.stacked(got, (size, size, channels))

  def _reported(self, row) -> tuple[np.ndarray, int]:
    """(pixels, label) of an `image_folder.usable` row, its passed-over files reported once."""
    pixels, label, passed = row
    with self._lock:
      for path, why in passed:
        if path not in self.skipped:
          self.skipped[path] = why
          log.warning("skipping %s: %s (%d unusable files so far)", path, why, len(self.skipped))
    if pixels is None:
      raise data_lib.DataError(f"no usable image among the {len(self)} files of "
                               f"{os.path.dirname(self.listing.paths[0])}; put PNG or JPEG "
                               "images there")
    return pixels, label

  def close(self) -> None:
    """Ends the worker processes, if any (their queues' semaphores released at once)."""
    if self._pool is not None:
      pool, self._pool = self._pool, None
      self._forget()
      pool.shutdown(wait=True, cancel_futures=True)
      del pool
      gc.collect()


class ChunkStream:
  """The train split's chunks, as `chunk(step, num_steps)`: this process's rows of the chunk
  (`local_rows` of `rows_per_call`), as host (uint8 images, int32 labels), zeros past the chunk's
  steps. The next chunk is decoded in the background while the loop trains on this one."""

  def __init__(self, source: RowSource, *, seed: int, steps_per_epoch: int, rows_per_step: int,
               steps_per_call: int, local_rows: tuple[int, int]):
    self.source, self.seed, self.steps_per_epoch = source, seed, steps_per_epoch
    self.rows_per_step, self.steps_per_call = rows_per_step, steps_per_call
    self.local_rows = local_rows
    self._permutation = jax.jit(data_lib.epoch_permutation, static_argnums=(0, 2))
    self._perms: dict[int, np.ndarray] = {}
    self._ahead = concurrent.futures.ThreadPoolExecutor(1)
    self._next: tuple[tuple[int, int], concurrent.futures.Future] | None = None
    self.image_shape = tuple(source[0][0].shape)

  @classmethod
  def for_loop(cls, source: RowSource, loop, *, seed: int, steps_per_epoch: int,
               rows_per_step: int) -> ChunkStream:
    """A stream of `source` for the train loop `loop` (`parallel.TrainLoop`): chunks of its
    steps per call, of which this process reads the rows its devices hold."""
    per_call = loop.steps_per_call * rows_per_step
    return cls(source, seed=seed, steps_per_epoch=steps_per_epoch, rows_per_step=rows_per_step,
               steps_per_call=loop.steps_per_call, local_rows=loop.place.local_rows(per_call))

  @property
  def rows_per_call(self) -> int:
    return self.steps_per_call * self.rows_per_step

  def order(self) -> np.ndarray:
    """The order the loop reads a chunk in: its rows from the first."""
    return np.arange(self.rows_per_call, dtype=np.int32)

  def placed(self, place, step: int, num_steps: int) -> data_lib.DeviceData:
    """`chunk(step, num_steps)` placed by `place` (a `placement.Placement`) as the loop reads it."""
    return place.put_data(self.chunk(step, num_steps), first_row=self.local_rows[0],
                          num_examples=self.rows_per_call)

  def chunk(self, step: int, num_steps: int) -> data_lib.DeviceData:
    """This process's rows of the chunk of `num_steps` (<= steps_per_call) steps from `step`."""
    epoch, index = divmod(step, self.steps_per_epoch)
    if self._next is not None and self._next[0] == (epoch, index):
      images, labels = self._next[1].result()  # decoded ahead, for the longest chunk from here
    else:
      images, labels = self._load(epoch, index)
    start = self.local_rows[0]
    real = max(0, min(len(labels), num_steps * self.rows_per_step - start))
    images[real:], labels[real:] = 0, 0  # past the chunk's steps: never read
    after = step + num_steps
    self._next = (divmod(after, self.steps_per_epoch),
                  self._ahead.submit(self._load, *divmod(after, self.steps_per_epoch)))
    return data_lib.DeviceData(images, labels)

  def _load(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of the longest chunk from step `index` of `epoch` (to the epoch's end
    or `steps_per_call` steps), padded with zeros to its share of a call's rows."""
    perm = self._perms.get(epoch)  # (this and the read-ahead thread replace it whole)
    if perm is None:
      perm = np.asarray(self._permutation(self.seed, epoch, len(self.source)))
      self._perms = {epoch: perm}
    start, stop = self.local_rows
    steps = min(self.steps_per_call, self.steps_per_epoch - index)
    first = index * self.rows_per_step
    rows = perm[first + start:first + min(stop, steps * self.rows_per_step)]
    images = np.zeros((stop - start,) + self.image_shape, np.uint8)
    labels = np.zeros((stop - start,), np.int32)
    if len(rows):
      images[:len(rows)], labels[:len(rows)] = self.source.read(rows)
    return images, labels

  def close(self) -> None:
    self._ahead.shutdown(wait=True, cancel_futures=True)
    if hasattr(self.source, "close"):
      self.source.close()


def train_source(config, info: data_lib.DatasetInfo) -> RowSource | None:
  """The train split as a `RowSource` when its images are more than config.max_device_bytes
  (uint8), else None: it is held on device whole."""
  fitted = user_data.Spec(config.dataset, config.image_size, config.channels, config.resize,
                          config.tfds_data_dir or None)
  if config.dataset.startswith(user_data.FOLDER):
    listing = image_folder.list_split(user_data.root(fitted), "train")
    rows = len(listing.paths)
  else:
    rows = data_lib.config_split_size(config, "train")
  if rows * math.prod(info.image_shape) <= config.max_device_bytes:
    return None
  if config.dataset.startswith(user_data.FOLDER):
    return FolderSource(listing, info.image_shape[0], info.image_shape[2], config.resize,
                        config.decode_workers)
  if config.dataset.startswith(user_data.TFDS):
    return RecordSource(user_data.tfds_source(fitted, "train"), info.image_shape, config.resize)
  return ArraySource(*data_lib.load_config_split(config, "train"))  # the built-in datasets
