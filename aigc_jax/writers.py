"""Where a run's numbers and pictures go: TensorBoard events, metrics.jsonl and PNG grids.

Each record and picture is written whole or not at all: a write that fails (a full disk, another
user's file) raises `safe_files.WriteError` naming the file, the cause and the fix, in the
caller's thread (the curves, drawn in the background, log it as a warning).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import struct
import time

import numpy as np
from PIL import Image

from aigc_jax import entry
from aigc_jax import plot
from aigc_jax import safe_files

log = logging.getLogger(__name__)


def image_grid(images: np.ndarray, ncols: int, pad: int = 2, scale: int = 1,
               border: float = 1.0) -> np.ndarray:
  """(N, H, W, C) floats in [0, 1] -> one uint8 (rows*(H*scale+pad)+pad, ..., C) image.

  Each image is upscaled `scale` times by nearest neighbour (scale >= 1); `pad` pixels of
  `border` (0 black to 1 white) surround and separate the images.
  """
  if int(scale) != scale or scale < 1 or pad < 0:
    raise ValueError(f"image_grid needs an integer scale >= 1 and pad >= 0, got scale={scale}, "
                     f"pad={pad}")
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  if scale > 1:
    images = images.repeat(int(scale), axis=1).repeat(int(scale), axis=2)
  n, h, w, c = images.shape
  ncols = max(1, min(ncols, n))
  nrows = math.ceil(n / ncols)
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), border, np.float32)
  for i in range(n):
    r, col = divmod(i, ncols)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = images[i]
  return (grid * 255.0 + 0.5).astype(np.uint8)


def sample_grid(sample, num_images: int, num_classes: int = 0, max_columns: int = 10):
  """(images, ncols) of a sample grid; with num_classes > 0, a row per class.

  `sample(num)` returns (images, labels), conditional samplers asking for labels
  arange(num) % num_classes; the conditional grid has num_classes rows of
  min(num_classes, max_columns) images.
  """
  if not num_classes:
    images, _ = sample(num_images)
    return images, int(math.ceil(math.sqrt(num_images)))
  columns = min(num_classes, max_columns)
  images, _ = sample(num_classes * columns)  # arange % C puts every class in a row: transpose
  images = images.reshape((columns, num_classes) + images.shape[1:]).swapaxes(0, 1)
  return images.reshape((-1,) + images.shape[2:]), columns


def save_png(path: str, images: np.ndarray, ncols: int, scale: int = 2, pad: int = 2,
             border: float = 0.5) -> str:
  """Writes `image_grid` of the images to `path` (scale >= 2 unless asked: readable at a
  glance); a grey border tells apart images of white or black backgrounds. Returns the path.
  The file is replaced whole (`safe_files.atomic_write`): a link there is replaced, not followed;
  its folder is made unless it is a link (WorkdirError)."""
  grid = image_grid(images, ncols, pad=pad, scale=scale, border=border)
  safe_files.make_dir(os.path.dirname(path) or ".")
  image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  return safe_files.atomic_write(path, lambda f: image.save(f, format="PNG"))


def _record(line: str) -> dict | None:
  """A metrics.jsonl line as its record, or None when it is not one."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


class EventFile:
  """A TensorBoard event file in `logdir`, written record by record in the caller's thread (no
  background writer whose failure would go unseen): records are appended whole or not at all."""

  def __init__(self, logdir: str):
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._event = event_pb2.Event
    self.path = os.path.join(safe_files.make_dir(logdir), f"events.out.tfevents."
                             f"{int(time.time())}.{socket.gethostname()}")
    new = not os.path.lexists(self.path)
    self._fd = safe_files.open_in_place(self.path, os.O_WRONLY | os.O_APPEND)
    remove = functools.partial(safe_files.remove, self.path) if new else (lambda: None)
    # A run stopped before its training loop leaves no new event file.
    self._forget = entry.undo_on_signal(remove, until_training=True)
    try:
      self._append([self._event(wall_time=time.time(), file_version="brain.Event:2")])
    except safe_files.WorkdirError:
      self.close()
      remove()  # no empty event file left behind
      raise

  def _append(self, events) -> None:
    from tensorboardX.record_writer import masked_crc32c  # pylint: disable=g-import-not-at-top
    records = []
    for event in events:
      data = event.SerializeToString()
      header = struct.pack("<Q", len(data))
      records += [
          header,
          struct.pack("<I", masked_crc32c(header)), data,
          struct.pack("<I", masked_crc32c(data))
      ]
    safe_files.append_bytes(self._fd, b"".join(records), self.path)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    now = time.time()
    self._append([
        self._event(summary=summary.scalar(tag, float(value)), step=int(step), wall_time=now)
        for tag, value in values.items()
    ])

  def image(self, step: int, tag: str, grid: np.ndarray) -> None:
    """Appends the uint8 (H, W, C) image `grid` as a PNG."""
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    self._append([
        self._event(summary=summary.image(tag, grid, dataformats="HWC"), step=int(step),
                    wall_time=time.time())
    ])

  def text(self, step: int, tag: str, text: str) -> None:
    """Appends `text` (Markdown) for TensorBoard's text dashboard."""
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    self._append(
        [self._event(summary=summary.text(tag, text), step=int(step), wall_time=time.time())])

  def close(self) -> None:
    self._forget()
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None


class MetricWriter:
  """Writes {name: scalar} per (step, split) to TensorBoard and to workdir/metrics.jsonl, and
  the curves of metrics.jsonl to workdir/plots when asked (`draw_curves`, in the background).
  A link at metrics.jsonl or tensorboard/ is a WorkdirError, never written through."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb, self._curves = None, plot.CurveDrawer(workdir) if enabled else None
    if enabled:
      safe_files.make_dir(workdir)
    if enabled and tensorboard:
      self._tb = EventFile(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> list[dict]:
    """Drops records after `step` (a resumed run rewrites them) and lines that are not records
    (e.g. one cut short by a crash; with a warning), and returns the records kept."""
    if not os.path.lexists(self.path):
      return []
    with os.fdopen(safe_files.open_in_place(self.path, os.O_RDONLY), encoding="utf-8") as f:
      lines = [line for line in f if line.strip()]
    records = [r for r in map(_record, lines) if r is not None]
    if len(records) != len(lines):
      log.warning("%s: skipped %d line(s) that are not metric records", self.path,
                  len(lines) - len(records))
    kept = [r for r in records if r["step"] <= step]
    if self.enabled and len(kept) != len(lines):
      safe_files.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: float(v) for k, v in metrics.items()})
    safe_files.append_text(self.path, json.dumps(record) + "\n")
    if self._tb is not None:
      self._tb.scalars(step, {f"{split}/{name}": value for name, value in metrics.items()})

  def write_event(self, step: int, split: str, record: dict) -> None:
    """Appends a non-metric record (e.g. a config change) to metrics.jsonl."""
    if self.enabled:
      safe_files.append_text(self.path,
                             json.dumps({"step": int(step), "split": split, **record}) + "\n")

  def write_images(self, step: int, name: str, grid: np.ndarray) -> None:
    if self._tb is not None:
      self._tb.image(step, name, grid)

  def write_text(self, step: int, tag: str, text: str) -> None:
    """TensorBoard only: `text` (Markdown, e.g. the config) under `tag`."""
    if self._tb is not None:
      self._tb.text(step, tag, text)

  def draw_curves(self) -> None:
    """Redraws workdir/plots/*.png on a background thread; `close` waits for it."""
    if self._curves is not None:
      self._curves.request()

  def close(self) -> None:
    if self._curves is not None:
      self._curves.close()
    if self._tb is not None:
      self._tb.close()
