"""Datasets the user names: 'folder:PATH' (PNG and JPEG files, see `image_folder`) and
'tfds:NAME[:SPLIT]' (any TFDS image dataset already prepared in the TFDS data dir; SPLIT is the
one to train on, 'train' by default, and the test split is 'test', else 'validation').

Their images are resized and centre-cropped to `image_size` x `image_size` with `channels`
channels (0: for a folder 64 and 3; for TFDS the dataset's own, which must then be fixed). A
folder's usable files are decoded once per process and kept (the in-memory path holds them all
anyway); the files it skips are reported once, with their number and the first few names.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from aigc_jax import idx
from aigc_jax import image_folder
from aigc_jax import tfds_split

log = logging.getLogger("aigc_jax.data")

FOLDER, TFDS = "folder:", "tfds:"
FOLDER_DEFAULTS = (64, 3)  # image_size, channels
SHOWN_SKIPS = 5


class Spec(NamedTuple):
  """What a user dataset's images become: its name, their side, channels and resize filter."""

  name: str
  image_size: int = 0
  channels: int = 0
  resize: str = "area"
  tfds_data_dir: str | None = None


def is_user_dataset(name: str) -> bool:
  return name.startswith((FOLDER, TFDS))


def describe(spec: Spec) -> tuple[tuple[int, int, int], int]:
  """((height, width, channels), number of classes) of the dataset's images once fitted."""
  if spec.name.startswith(FOLDER):
    size, channels = _folder_shape(spec)
    return (size, size, channels), len(image_folder.list_split(root(spec), "train").classes)
  features = _tfds_builder(spec).info.features
  shape = _tfds_shape(spec, tuple(features["image"].shape))
  return shape, features["label"].num_classes if "label" in features else 1


def split_size(spec: Spec, split: str) -> int:
  """The number of examples of `split` ('train' or 'test'): a folder's usable files (decoding
  them), or the TFDS split's records."""
  if spec.name.startswith(FOLDER):
    return len(_folder_split(spec, split)[1])
  return len(tfds_source(spec, split))


def load_split(spec: Spec, split: str,
               rows: idx.Rows | None = None) -> tuple[np.ndarray, np.ndarray, str]:
  """(uint8 (N, H, W, C) images, int32 (N,) labels, where they came from) of the split's rows
  [start, stop) (all by default)."""
  if spec.name.startswith(FOLDER):
    images, labels = _folder_split(spec, split)
    start, stop = rows or (0, len(labels))
    return images[start:stop], labels[start:stop], f"image folder {root(spec)}"
  source = tfds_source(spec, split)
  records = tfds_split.read_records(source, rows or (0, len(source)))
  shape = describe(spec)[0]
  images, labels = stacked([fit_record(r, shape, spec.resize) for r in records], shape)
  return images, labels, f"TFDS {_tfds_name(spec)[0]!r}"


def root(spec: Spec) -> str:
  root = os.path.expanduser(spec.name[len(FOLDER):])
  if not os.path.isdir(root):
    raise idx.DataError(f"dataset '{spec.name}': {root} is not a directory; point "
                        "--config.dataset=folder:PATH at a folder of PNG or JPEG images")
  return root


def _folder_shape(spec: Spec) -> tuple[int, int]:
  return spec.image_size or FOLDER_DEFAULTS[0], spec.channels or FOLDER_DEFAULTS[1]


@functools.lru_cache(maxsize=4)
def _folder_split(spec: Spec, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The usable images and labels of a folder's split, decoded once per process."""
  folder = root(spec)
  listing = image_folder.list_split(folder, split)
  size, channels = _folder_shape(spec)
  images, labels, skipped = image_folder.load(listing, size, channels, spec.resize)
  if skipped:
    shown = "; ".join(f"{os.path.relpath(p, folder)}: {why}" for p, why in skipped[:SHOWN_SKIPS])
    log.warning("%s split '%s': skipped %d of %d files (%s%s)", folder, split, len(skipped),
                len(listing.paths), shown, "; ..." if len(skipped) > SHOWN_SKIPS else "")
  if not len(labels):
    raise idx.DataError(
        f"dataset '{spec.name}' split '{split}': no usable image among {len(listing.paths)} "
        f"files{' (' + skipped[0][1] + ', ...)' if skipped else ''}; put PNG or JPEG images "
        "there (a folder of at least 10 images: every tenth is the test split)")
  return images, labels


def _tfds_name(spec: Spec) -> tuple[str, str]:
  """(TFDS name, the split to train on) of 'tfds:NAME[:SPLIT]'."""
  name, _, train = spec.name[len(TFDS):].partition(":")
  return name, train or "train"


def _tfds_builder(spec: Spec) -> Any:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(_tfds_name(spec)[0], data_dir=spec.tfds_data_dir)
  except Exception as e:  # pylint: disable=broad-except  (an unknown name: one line)
    raise idx.DataError(f"dataset '{spec.name}': TFDS has no dataset "
                        f"{_tfds_name(spec)[0]!r} ({type(e).__name__}); use a name from "
                        "tfds.list_builders()") from None


def _tfds_shape(spec: Spec, native: tuple) -> tuple[int, int, int]:
  size, channels = spec.image_size, spec.channels or native[2]
  if not size:
    if native[0] is None or native[0] != native[1]:
      raise idx.DataError(f"dataset '{spec.name}' has images of shape {native}; set "
                          "--config.image_size to the side to resize them to")
    size = native[0]
  return size, size, channels


def tfds_source(spec: Spec, split: str) -> Any:
  """The TFDS split to train on ('train') or to test on: 'test', else 'validation'."""
  name, train = _tfds_name(spec)
  if split == "train":
    return tfds_split.open_split(name, train, spec.tfds_data_dir)
  try:
    return tfds_split.open_split(name, "test", spec.tfds_data_dir)
  except Exception:  # pylint: disable=broad-except  (no test split: the validation split)
    return tfds_split.open_split(name, "validation", spec.tfds_data_dir)


def stacked(rows: list[tuple[np.ndarray, int]],
            image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 (n, *image_shape) images, int32 (n,) labels) of n (image, label) rows, n >= 0."""
  if not rows:
    return np.zeros((0,) + tuple(image_shape), np.uint8), np.zeros((0,), np.int32)
  return np.stack([r[0] for r in rows]), np.asarray([r[1] for r in rows], np.int32)


def fit_record(record: dict, shape: tuple[int, int, int], resize: str) -> tuple[np.ndarray, int]:
  """(uint8 image fitted to `shape`, label: 0 where the dataset has none) of a TFDS record."""
  pixels = np.asarray(record["image"], np.uint8)
  if pixels.shape != shape:
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    pixels = image_folder.fit(image, shape[0], shape[2], resize)
  return pixels, int(record.get("label", 0))
