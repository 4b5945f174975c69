"""Image datasets as in-memory arrays, plus pure, jit-friendly batching.

Data comes from IDX files (an explicit directory, the Debian package directory)
or from TFDS. Whole splits live on device; batches are gathered inside jit.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import logging
import os
import socket
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.noise import batch_noise

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IDX_DIR_ENV = "AIGC_JAX_IDX_DIR"
TFDS_HOST = "storage.googleapis.com"  # where TFDS downloads from
_IDX_FIX = "re-download the file or point --config.idx_dir elsewhere"
_GZIP_MAGIC = b"\x1f\x8b"
# IDX type code -> dtype (multi-byte types are stored big-endian).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_TQDM_MIN_RECORDS = 10_000
_SCALES = ("zero_one", "minus_one_one")


class DataError(ValueError):
  """A dataset file or source is missing or malformed."""


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

# ----------------------------------------------------------------- IDX files


def read_idx(path: PathLike) -> np.ndarray:
  """Reads an IDX file (plain or gzipped) into a native-endian array."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f"{path}: cannot read file ({e.strerror}); {_IDX_FIX}") from e
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise DataError(f"{path}: corrupt gzip stream ({e}); {_IDX_FIX}") from e
  return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: PathLike) -> np.ndarray:

  def fail(what: str) -> DataError:
    return DataError(f"{path}: {what}; {_IDX_FIX}")

  if len(raw) < 4:
    raise fail(f"too short for an IDX header (expected >= 4 bytes, got {len(raw)})")
  if raw[0] != 0 or raw[1] != 0:
    raise fail(f"bad IDX magic (expected first two bytes 00 00, got {raw[:2].hex(' ')})")
  code, ndim = raw[2], raw[3]
  if code not in _IDX_DTYPES:
    known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
    raise fail(f"unknown IDX type code (expected one of {known}, got 0x{code:02X})")
  if not 1 <= ndim <= 4:
    raise fail(f"unsupported number of dimensions (expected 1..4, got {ndim})")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise fail(f"truncated header (expected {header} bytes, got {len(raw)})")
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  if min(dims) == 0:
    raise fail(f"zero-sized dimension (expected all dims > 0, got {dims})")
  dtype = _IDX_DTYPES[code]
  expected = header + int(np.prod(dims)) * dtype.itemsize
  if len(raw) != expected:
    what = "truncated payload" if len(raw) < expected else "trailing bytes after payload"
    raise fail(f"{what} (expected {expected} bytes for shape {dims}, got {len(raw)})")
  arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
  return arr.astype(dtype.newbyteorder("="))  # always a writable native copy


def _idx_candidates(directory: PathLike, split: str, kind: str) -> list[str]:
  prefix, n = _SPLIT_PREFIX[split], 3 if kind == "images" else 1
  names = [f"{prefix}-{kind}-idx{n}-ubyte", f"{prefix}-{kind}.idx{n}-ubyte"]
  return [os.path.join(directory, b + gz) for b in names for gz in ("", ".gz")]


def _find_idx_files(directory: PathLike, split: str) -> tuple[str, str] | None:
  """Returns the (images, labels) paths of a split if both exist."""
  found = [
      next((p for p in _idx_candidates(directory, split, kind) if os.path.isfile(p)),
           None) for kind in ("images", "labels")
  ]
  return (found[0], found[1]) if found[0] and found[1] else None


def read_idx_split(directory: PathLike,
                   split: str,
                   *,
                   num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split from a directory of IDX files: uint8 (N,H,W,C), int32 (N,)."""
  if split not in _SPLIT_PREFIX:
    raise DataError(f"{directory}: unknown IDX split '{split}' "
                    f"(expected one of {sorted(_SPLIT_PREFIX)}); use 'train' or 'test'")
  paths = _find_idx_files(directory, split)
  if paths is None:
    looked = [
        os.path.basename(p)
        for kind in ("images", "labels")
        for p in _idx_candidates(directory, split, kind)
    ]
    raise DataError(f"{directory}: missing IDX files for split '{split}' (looked for "
                    f"{', '.join(looked)}); put the files there or point "
                    "--config.idx_dir elsewhere")
  images_path, labels_path = paths
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise DataError(f"{images_path}: not an image file (expected uint8 with 3 or 4 dims, "
                    f"got {images.dtype} with shape {images.shape}); {_IDX_FIX}")
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise DataError(f"{labels_path}: not a label file (expected 1-d uint8, got "
                    f"{labels.dtype} with shape {labels.shape}); {_IDX_FIX}")
  if len(images) != len(labels):
    raise DataError(f"{labels_path}: label count does not match {images_path} "
                    f"(expected {len(images)}, got {len(labels)}); {_IDX_FIX}")
  if num_classes is not None and labels.max() >= num_classes:
    raise DataError(f"{labels_path}: label out of range (expected [0, {num_classes}), "
                    f"got max {labels.max()}); {_IDX_FIX}")
  if images.ndim == 3:
    images = images[..., None]
  return images, labels.astype(np.int32)


# ------------------------------------------------------------------- sources


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


def network_reachable(host: str = TFDS_HOST, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to `host`:443 opens within `timeout` seconds."""
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _tfds_source(info: DatasetInfo, split: str, data_dir: str | None):
  """`tfds.data_source` of a prepared split; downloads and prepares it only when the network is
  reachable (without one, TFDS would retry for minutes and leave partial downloads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(info.tfds_name, split=split, data_dir=data_dir, download=False)
  except Exception:  # pylint: disable=broad-except  # not prepared in data_dir
    if not network_reachable():
      raise DataError(f"TFDS has not prepared {info.tfds_name!r} in its data_dir and there is no "
                      f"network to download it ({TFDS_HOST} is unreachable)") from None
  return tfds.data_source(info.tfds_name, split=split, data_dir=data_dir)


def _from_tfds(info: DatasetInfo, split: str, data_dir: str | None,
               tried: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole split through `tfds.data_source` into numpy arrays."""
  try:
    records = _read_records(_tfds_source(info, split, data_dir))
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"dataset '{info.name}' split '{split}': no data found (tried "
                    f"{'; '.join([*tried, f'TFDS {info.tfds_name!r}'])}; TFDS failed with "
                    f"{type(e).__name__}: {e}); {missing_data_fix(info)}") from e
  if not records:
    raise DataError(f"TFDS '{info.tfds_name}' split '{split}' is empty; "
                    "choose a non-empty split")
  images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  labels = np.asarray([r["label"] for r in records], np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return images, labels


def _read_records(source: Any, chunk: int = 1024) -> list[Any]:
  """Reads all records, batched via `__getitems__` when it works."""
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  n = len(source)
  records: list[Any] = []
  with tqdm.tqdm(total=n, disable=n < _TQDM_MIN_RECORDS, desc="tfds", unit="ex") as bar:
    for start in range(0, n, chunk):
      keys = list(range(start, min(n, start + chunk)))
      try:
        records.extend(source.__getitems__(keys))
      except (AttributeError, TypeError):  # e.g. tfds.testing.mock_data sources
        records.extend(source[k] for k in keys)
      bar.update(len(keys))
  return records


def load_split(name: str, split: str, *, idx_dir: PathLike | None = None,
               tfds_data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Loads a split as uint8 (N,H,W,C) images and int32 (N,) labels.

  Sources, first wins: `idx_dir` (else $AIGC_JAX_IDX_DIR), the Debian
  directory, then TFDS. An explicitly given IDX directory is never skipped.
  """
  if name not in DATASETS:
    raise DataError(f"unknown dataset '{name}' (expected one of {sorted(DATASETS)}); "
                    "set --config.dataset to a known name")
  info = DATASETS[name]
  explicit = os.fspath(idx_dir) if idx_dir else os.environ.get(IDX_DIR_ENV) or None
  tried: list[str] = []
  if explicit is not None:
    where = "idx_dir" if idx_dir else f"${IDX_DIR_ENV}"
    if not os.path.isdir(explicit):
      raise DataError(f"{explicit}: IDX directory (from {where}) does not exist; "
                      "create it with the IDX files or point --config.idx_dir elsewhere")
    images, labels = read_idx_split(explicit, split, num_classes=info.num_classes)
    source = f"IDX files in {explicit} (from {where})"
  elif (info.debian_dir and split in _SPLIT_PREFIX and
        _find_idx_files(info.debian_dir, split) is not None):
    images, labels = read_idx_split(info.debian_dir, split, num_classes=info.num_classes)
    source = f"Debian IDX files in {info.debian_dir}"
  else:
    tried.append(f"${IDX_DIR_ENV} (unset)")
    if info.debian_dir:
      tried.append(f"Debian dir {info.debian_dir} (no IDX files for this split)")
    data_dir = os.fspath(tfds_data_dir) if tfds_data_dir else None
    images, labels = _from_tfds(info, split, data_dir, tried)
    if labels.min() < 0 or labels.max() >= info.num_classes:
      raise DataError(f"TFDS '{info.tfds_name}' split '{split}': label out of range "
                      f"(expected [0, {info.num_classes}), got [{labels.min()}, "
                      f"{labels.max()}]); re-prepare the TFDS dataset")
    source = f"TFDS {info.tfds_name!r} (data_dir={data_dir or 'default'})"
  if images.shape[1:] != info.image_shape:
    raise DataError(f"{source}: wrong image shape for '{name}' (expected "
                    f"{info.image_shape}, got {images.shape[1:]}); point the loader "
                    "at data for this dataset")
  log.info("loaded %s/%s: %d examples from %s", name, split, len(images), source)
  return images, labels


def load_config_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """`load_split` of config.dataset from the config's sources (idx_dir, tfds_data_dir)."""
  return load_split(config.dataset, split, idx_dir=config.idx_dir or None,
                    tfds_data_dir=config.tfds_data_dir or None)


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


def preprocess(images_uint8: jax.Array | np.ndarray,
               *,
               scale: str = "zero_one",
               binarize_rng: jax.Array | None = None,
               axis_name: str | None = None) -> jax.Array:
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


@functools.partial(jax.jit, static_argnames=("scale",))
def _eval_batch(data: DeviceData, idx: jax.Array, mask: jax.Array,
                scale: str) -> dict[str, jax.Array]:
  return {
      "image": preprocess(jnp.take(data.images, idx, axis=0), scale=scale),
      "label": jnp.take(data.labels, idx, axis=0),
      "mask": mask,
  }


def eval_batches(data: DeviceData,
                 batch_size: int,
                 *,
                 scale: str = "zero_one") -> Iterator[dict[str, jax.Array]]:
  """Fixed-size in-order batches; the last is padded, with 'mask' 0 on padding."""
  if batch_size <= 0:
    raise DataError(f"eval batch_size must be positive (got {batch_size}); "
                    "set a positive --config.batch_size")
  n = int(data.labels.shape[0])
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size, dtype=np.int32)
    mask = (idx < n).astype(np.float32)
    yield _eval_batch(data, np.where(idx < n, idx, 0), mask, scale)
