"""Image datasets as in-memory arrays, plus pure, jit-friendly batching.

Data comes from IDX files (an explicit directory, the Debian package directory)
or from TFDS. Whole splits live on device; batches are gathered inside jit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import idx
from aigc_jax import tfds_split
from aigc_jax import user_data
from aigc_jax.noise import batch_noise

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IDX_DIR_ENV = "AIGC_JAX_IDX_DIR"
_SCALES = ("zero_one", "minus_one_one")
DataError = idx.DataError  # a dataset file or source is missing or malformed
Rows = idx.Rows


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a supported dataset."""

  name: str
  image_shape: tuple[int, int, int]  # (H, W, C)
  num_classes: int
  tfds_name: str
  debian_dir: str | None
  debian_package: str | None = None  # the Debian package that installs debian_dir's files
  idx_files: bool = False  # published as IDX files (the MNIST format): idx_dir can serve it


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist":
        DatasetInfo("fashion_mnist", (28, 28, 1), 10, "fashion_mnist",
                    "/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist", idx_files=True),
    "mnist":
        DatasetInfo("mnist", (28, 28, 1), 10, "mnist", None, idx_files=True),
    "cifar10":
        DatasetInfo("cifar10", (32, 32, 3), 10, "cifar10", None),
}

# ------------------------------------------------------------------- sources


def dataset_info(name: str, image_size: int = 0, channels: int = 0,
                 tfds_data_dir: PathLike | None = None) -> DatasetInfo:
  """The dataset `name`: a built-in one (`DATASETS`, at its own shape), or a user's
  ('folder:PATH', 'tfds:NAME[:SPLIT]': `user_data`) at `image_size` and `channels`."""
  if user_data.is_user_dataset(name):
    spec = user_data.Spec(name, image_size, channels, tfds_data_dir=_dir(tfds_data_dir))
    shape, num_classes = user_data.describe(spec)
    return DatasetInfo(name, shape, num_classes, name, None)
  if name not in DATASETS:
    raise DataError(f"unknown dataset '{name}' (expected one of {sorted(DATASETS)}, "
                    "'folder:PATH' or 'tfds:NAME[:SPLIT]'); set --config.dataset")
  info = DATASETS[name]
  height, _, own_channels = info.image_shape
  if image_size not in (0, height) or channels not in (0, own_channels):
    raise DataError(f"dataset '{name}' is {info.image_shape}: image_size and channels resize "
                    f"only the datasets 'folder:PATH' and 'tfds:NAME' (e.g. "
                    f"'tfds:{info.tfds_name}'); leave them 0")
  return info


def config_info(config) -> DatasetInfo:
  """`dataset_info` of config.dataset at the config's image_size and channels."""
  return dataset_info(config.dataset, config.image_size, config.channels, config.tfds_data_dir)


def _dir(path: PathLike | None) -> str | None:
  return os.fspath(path) if path else None


def missing_data_fix(info: DatasetInfo) -> str:
  """How to make `info`'s data available: only the sources that can provide that dataset."""
  fixes = []
  if info.debian_package:
    fixes.append(f"install it with 'apt-get install {info.debian_package}'")
  if info.idx_files:
    fixes.append(f"pass --config.idx_dir=DIR (or set {IDX_DIR_ENV}) with its IDX files")
  fixes.append(f"run once with network access, so that TFDS downloads and prepares "
               f"{info.tfds_name!r} into its data_dir (--config.tfds_data_dir=DIR, else "
               "$TFDS_DATA_DIR or ~/tensorflow_datasets), or point --config.tfds_data_dir at "
               "a directory where it is already prepared")
  return ", ".join(fixes[:-1]) + (", or " if len(fixes) > 1 else "") + fixes[-1]


class _Source(NamedTuple):
  info: DatasetInfo
  idx_dir: str | None  # the IDX directory it reads; None: TFDS
  tfds_data_dir: str | None
  tried: tuple[str, ...]  # the sources passed over before TFDS
  text: str


def _source(name: str, split: str, idx_dir: PathLike | None,
            tfds_data_dir: PathLike | None) -> _Source:
  """Where a split comes from, first wins: `idx_dir` (else $AIGC_JAX_IDX_DIR), the Debian
  directory, then TFDS. An explicitly given IDX directory is never skipped."""
  if name not in DATASETS:
    raise DataError(f"unknown dataset '{name}' (expected one of {sorted(DATASETS)}); "
                    "set --config.dataset to a known name")
  info = DATASETS[name]
  explicit = os.fspath(idx_dir) if idx_dir else os.environ.get(IDX_DIR_ENV) or None
  if explicit is not None:
    where = "idx_dir" if idx_dir else f"${IDX_DIR_ENV}"
    if not os.path.isdir(explicit):
      raise DataError(f"{explicit}: IDX directory (from {where}) does not exist; "
                      "create it with the IDX files or point --config.idx_dir elsewhere")
    return _Source(info, explicit, None, (), f"IDX files in {explicit} (from {where})")
  if (info.debian_dir and split in idx.SPLIT_PREFIX and
      idx.find_split(info.debian_dir, split) is not None):
    return _Source(info, info.debian_dir, None, (), f"Debian IDX files in {info.debian_dir}")
  tried = [f"${IDX_DIR_ENV} (unset)"] + (
      [f"Debian dir {info.debian_dir} (no IDX files for this split)"] if info.debian_dir else [])
  data_dir = os.fspath(tfds_data_dir) if tfds_data_dir else None
  return _Source(info, None, data_dir, tuple(tried),
                 f"TFDS {info.tfds_name!r} (data_dir={data_dir or 'default'})")


def _tfds_failed(source: _Source, split: str, e: Exception) -> DataError:
  info = source.info
  return DataError(f"dataset '{info.name}' split '{split}': no data found (tried "
                   f"{'; '.join([*source.tried, f'TFDS {info.tfds_name!r}'])}; TFDS failed "
                   f"with {type(e).__name__}: {e}); {missing_data_fix(info)}")


def _open_tfds(source: _Source, split: str) -> Any:
  """The split's `tfds.data_source` (random access, nothing read yet); never empty."""
  try:
    records = tfds_split.open_split(source.info.tfds_name, split, source.tfds_data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_failed(source, split, e) from e
  if len(records) == 0:
    raise DataError(f"TFDS '{source.info.tfds_name}' split '{split}' is empty; "
                    "choose a non-empty split")
  return records


def _from_tfds(source: _Source, split: str, rows: Rows | None) -> tuple[np.ndarray, np.ndarray]:
  """Rows [start, stop) of a split (all by default) through `tfds.data_source`."""
  records = _open_tfds(source, split)
  try:
    records = tfds_split.read_records(records, rows or (0, len(records)))
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_failed(source, split, e) from e
  images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  labels = np.asarray([r["label"] for r in records], np.int32)
  return images[..., None] if images.ndim == 3 else images, labels


def split_size(name: str, split: str, *, idx_dir: PathLike | None = None,
               tfds_data_dir: PathLike | None = None, **fitted) -> int:
  """The number of examples of a split (`load_split`'s source), from its IDX header or TFDS's
  index, without reading its images (a folder's usable files: decoded once, see `user_data`)."""
  if user_data.is_user_dataset(name):
    return user_data.split_size(user_data.Spec(name, **fitted, tfds_data_dir=_dir(tfds_data_dir)),
                                split)
  source = _source(name, split, idx_dir, tfds_data_dir)
  if source.idx_dir is not None:
    return idx.split_size(source.idx_dir, split)
  return len(_open_tfds(source, split))


def load_split(name: str, split: str, *, idx_dir: PathLike | None = None,
               tfds_data_dir: PathLike | None = None, rows: Rows | None = None,
               **fitted) -> tuple[np.ndarray, np.ndarray]:
  """A split as uint8 (N,H,W,C) images and int32 (N,) labels: all of it, or only its rows
  [start, stop) (which is all a process reads when its devices hold those). Sources: `_source`,
  or `user_data` for 'folder:' and 'tfds:' names, whose images are fitted to `fitted`
  (image_size, channels, resize)."""
  if user_data.is_user_dataset(name):
    spec = user_data.Spec(name, **fitted, tfds_data_dir=_dir(tfds_data_dir))
    images, labels, text = user_data.load_split(spec, split, rows)
    log.info("loaded %s/%s: %d examples%s from %s", name, split, len(images),
             f" (rows {rows[0]}:{rows[1]})" if rows else "", text)
    return images, labels
  source = _source(name, split, idx_dir, tfds_data_dir)
  info = source.info
  if source.idx_dir is not None:
    images, labels = idx.read_split(source.idx_dir, split, num_classes=info.num_classes, rows=rows)
  else:
    images, labels = _from_tfds(source, split, rows)
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
      raise DataError(f"TFDS '{info.tfds_name}' split '{split}': label out of range "
                      f"(expected [0, {info.num_classes}), got [{labels.min()}, "
                      f"{labels.max()}]); re-prepare the TFDS dataset")
  if images.shape[1:] != info.image_shape:
    raise DataError(f"{source.text}: wrong image shape for '{name}' (expected "
                    f"{info.image_shape}, got {images.shape[1:]}); point the loader "
                    "at data for this dataset")
  log.info("loaded %s/%s: %d examples%s from %s", name, split, len(images),
           f" (rows {rows[0]}:{rows[1]})" if rows else "", source.text)
  return images, labels


def load_config_split(config, split: str,
                      rows: Rows | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`load_split` of config.dataset from the config's sources (idx_dir, tfds_data_dir), fitted
  to its image_size, channels and resize."""
  return load_split(config.dataset, split, idx_dir=config.idx_dir or None,
                    tfds_data_dir=config.tfds_data_dir or None, rows=rows, **_fitted(config))


def config_split_size(config, split: str) -> int:
  """`split_size` of config.dataset from the config's sources."""
  return split_size(config.dataset, split, idx_dir=config.idx_dir or None,
                    tfds_data_dir=config.tfds_data_dir or None, **_fitted(config))


def _fitted(config) -> dict:
  return dict(image_size=config.image_size, channels=config.channels, resize=config.resize)


# -------------------------------------------------------------- device side


class DeviceData(NamedTuple):
  """A split's arrays (a pytree): on the host (`to_host`), a device, or split over devices."""

  images: jax.Array  # uint8 (N, H, W, C)
  labels: jax.Array  # int32 (N,)


def to_host(images: np.ndarray | jax.Array, labels: np.ndarray | jax.Array) -> DeviceData:
  """A split as checked numpy arrays: uint8 (N,H,W,C) images and int32 (N,) labels."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
    raise DataError(f"to_device: expected uint8 (N,H,W,C) images and (N,) labels, got "
                    f"{images.dtype}{images.shape} and {labels.shape}; use load_split")
  return DeviceData(images, labels.astype(np.int32))


def to_device(images: np.ndarray | jax.Array, labels: np.ndarray | jax.Array,
              sharding: jax.sharding.Sharding | None = None) -> DeviceData:
  """Puts a split on device as uint8 images and int32 labels."""
  return jax.device_put(to_host(images, labels), sharding)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped)."""
  if batch_size <= 0 or batch_size > num_examples:
    raise DataError(f"batch_size must be in [1, {num_examples}] for {num_examples} "
                    f"examples (got {batch_size}); lower --config.batch_size")
  return num_examples // batch_size


def epoch_permutation(seed: int | jax.Array, epoch: int | jax.Array,
                      num_examples: int) -> jax.Array:
  """Deterministic int32 permutation of range(num_examples) for (seed, epoch)."""
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  return jax.random.permutation(key, num_examples).astype(jnp.int32)


def preprocess(images_uint8: jax.Array | np.ndarray, *, scale: str = "zero_one",
               binarize_rng: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
  """uint8 -> float32 in [0,1] or [-1,1]; optional dynamic binarization.

  Binarization draws Bernoulli(pixel) from `binarize_rng`; under a named data axis, for the whole
  global batch and keeps this device's rows (`noise.batch_noise`), so it does not depend on the
  device count.
  """
  if scale not in _SCALES:
    raise ValueError(f"unknown scale '{scale}' (expected one of {_SCALES})")
  x = jnp.asarray(images_uint8).astype(jnp.float32)
  if binarize_rng is not None:
    if scale != "zero_one":
      raise ValueError(f"binarization needs scale='zero_one' (got '{scale}')")
    uniform = batch_noise(jax.random.uniform, binarize_rng, x.shape, axis_name)
    return (uniform < x / 255.0).astype(jnp.float32)
  return x / 255.0 if scale == "zero_one" else x / 127.5 - 1.0


def get_batch(data: DeviceData, perm: jax.Array, index: int | jax.Array, batch_size: int, *,
              scale: str = "zero_one", binarize_rng: jax.Array | None = None) -> dict:
  """Batch `index` of the epoch given by `perm`; pure, `index` may be traced."""
  idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
  return {
      "image":
          preprocess(jnp.take(data.images, idx, axis=0), scale=scale, binarize_rng=binarize_rng),
      "label":
          jnp.take(data.labels, idx, axis=0),
  }
