"""IDX files (the MNIST format, plain or gzipped): a split's images and labels, whole or a range
of rows. A plain file is checked against its header and read only where the rows lie."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import Callable, NamedTuple

import numpy as np

PathLike = str | os.PathLike[str]
Rows = tuple[int, int]  # [start, stop) of the first dimension

FIX = "re-download the file or point --config.idx_dir elsewhere"
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER = 4 + 4 * 4
# IDX type code -> dtype (multi-byte types are stored big-endian).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class DataError(ValueError):
  """A dataset file or source is missing or malformed."""


class Header(NamedTuple):
  dtype: np.dtype
  dims: tuple[int, ...]
  size: int  # header bytes

  @property
  def row_bytes(self) -> int:
    return math.prod(self.dims[1:]) * self.dtype.itemsize


def parse_header(head: bytes, file_size: int | None, path: PathLike) -> Header:
  """The header at the start of `head`, checked against the whole file's `file_size` (in Python
  integers: dimensions that overflow int64 are reported, not wrapped; None: not checked)."""

  def fail(what: str) -> DataError:
    return DataError(f"{path}: {what}; {FIX}")

  if len(head) < 4:
    raise fail(f"too short for an IDX header (expected >= 4 bytes, got {len(head)})")
  if head[0] != 0 or head[1] != 0:
    raise fail(f"bad IDX magic (expected first two bytes 00 00, got {head[:2].hex(' ')})")
  code, ndim = head[2], head[3]
  if code not in _DTYPES:
    known = ", ".join(f"0x{c:02X}" for c in _DTYPES)
    raise fail(f"unknown IDX type code (expected one of {known}, got 0x{code:02X})")
  if not 1 <= ndim <= 4:
    raise fail(f"unsupported number of dimensions (expected 1..4, got {ndim})")
  size = 4 + 4 * ndim
  if len(head) < size:
    raise fail(f"truncated header (expected {size} bytes, got {len(head)})")
  dims = struct.unpack(f">{ndim}I", head[4:size])
  if min(dims) == 0:
    raise fail(f"zero-sized dimension (expected all dims > 0, got {dims})")
  expected = size + math.prod(dims) * _DTYPES[code].itemsize
  if file_size is not None and file_size != expected:
    what = "truncated payload" if file_size < expected else "trailing bytes after payload"
    raise fail(f"{what} (expected {expected} bytes for shape {dims}, got {file_size})")
  return Header(_DTYPES[code], dims, size)


def _check_rows(rows: Rows | None, header: Header, path: PathLike) -> Rows:
  start, stop = rows if rows is not None else (0, header.dims[0])
  if not 0 <= start <= stop <= header.dims[0]:
    raise DataError(f"{path}: rows [{start}, {stop}) are outside its {header.dims[0]} rows; "
                    "the split's files changed while it was read, check them")
  return start, stop


def _cannot_read(path: PathLike, e: OSError) -> DataError:
  return DataError(f"{path}: cannot read file ({e.strerror}); {FIX}")


def _open(path: PathLike) -> tuple[Header, Callable[[int, int], bytes]]:
  """An IDX file's checked header and a reader of the payload bytes of its rows [start, stop):
  a gzipped file is decompressed here, once; a plain one is read later, only where the rows
  lie."""
  try:
    with open(path, "rb") as f:
      head = f.read(_MAX_HEADER)
      if head[:2] == _GZIP_MAGIC:
        raw = _gunzip(head + f.read(), path)
        header = parse_header(raw[:_MAX_HEADER], len(raw), path)
        return header, lambda start, stop: raw[header.size + start * header.row_bytes:header.size +
                                               stop * header.row_bytes]
      header = parse_header(head, os.fstat(f.fileno()).st_size, path)
  except OSError as e:
    raise _cannot_read(path, e) from e

  def read_plain(start: int, stop: int) -> bytes:
    try:
      with open(path, "rb") as f:
        f.seek(header.size + start * header.row_bytes)
        return f.read((stop - start) * header.row_bytes)
    except OSError as e:
      raise _cannot_read(path, e) from e

  return header, read_plain


def _array(path: PathLike, opened: tuple[Header, Callable[[int, int], bytes]],
           rows: Rows | None) -> np.ndarray:
  header, read = opened
  start, stop = _check_rows(rows, header, path)
  array = np.frombuffer(read(start, stop), header.dtype).reshape((stop - start, *header.dims[1:]))
  return array.astype(header.dtype.newbyteorder("="))  # always a writable native copy


def read_idx(path: PathLike, rows: Rows | None = None) -> np.ndarray:
  """An IDX file as a native-endian array: all of it, or rows [start, stop) of its first
  dimension (a plain file reads only those; a gzipped one is decompressed whole)."""
  return _array(path, _open(path), rows)


def _gunzip(raw: bytes, path: PathLike) -> bytes:
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path}: corrupt gzip stream ({e}); {FIX}") from e


def count(path: PathLike) -> int:
  """The first dimension of an IDX file (its rows), from its header. A gzipped file is
  decompressed only as far as its header: its size comes from the gzip trailer (the size mod
  2**32), and only where that does not fit the header is the whole file decompressed to check."""
  try:
    with open(path, "rb") as f:
      if f.read(2) != _GZIP_MAGIC:
        return _open(path)[0].dims[0]
      f.seek(-4, os.SEEK_END)
      size_mod_2_32 = struct.unpack("<I", f.read(4))[0]
      f.seek(0)
      with gzip.GzipFile(fileobj=f) as g:
        head = g.read(_MAX_HEADER)
  except (OSError, EOFError, zlib.error):
    return _open(path)[0].dims[0]  # a read error or a corrupt stream: said there, in one line
  try:
    header = parse_header(head, None, path)
  except DataError:
    return _open(path)[0].dims[0]
  if (header.size + math.prod(header.dims) * header.dtype.itemsize) % 2**32 != size_mod_2_32:
    return _open(path)[0].dims[0]
  return header.dims[0]


def candidates(directory: PathLike, split: str, kind: str) -> list[str]:
  prefix, n = SPLIT_PREFIX[split], 3 if kind == "images" else 1
  names = [f"{prefix}-{kind}-idx{n}-ubyte", f"{prefix}-{kind}.idx{n}-ubyte"]
  return [os.path.join(directory, b + gz) for b in names for gz in ("", ".gz")]


def find_split(directory: PathLike, split: str) -> tuple[str, str] | None:
  """The (images, labels) paths of a split if both exist."""
  found = [
      next((p for p in candidates(directory, split, kind) if os.path.isfile(p)), None)
      for kind in ("images", "labels")
  ]
  return (found[0], found[1]) if found[0] and found[1] else None


def split_paths(directory: PathLike, split: str) -> tuple[str, str]:
  """`find_split`, or a DataError naming the files looked for."""
  if split not in SPLIT_PREFIX:
    raise DataError(f"{directory}: unknown IDX split '{split}' "
                    f"(expected one of {sorted(SPLIT_PREFIX)}); use 'train' or 'test'")
  paths = find_split(directory, split)
  if paths is None:
    looked = [
        os.path.basename(p) for kind in ("images", "labels")
        for p in candidates(directory, split, kind)
    ]
    raise DataError(f"{directory}: missing IDX files for split '{split}' (looked for "
                    f"{', '.join(looked)}); put the files there or point "
                    "--config.idx_dir elsewhere")
  return paths


def split_size(directory: PathLike, split: str) -> int:
  """The number of examples of a split (its images file's rows; `read_split` checks the rest)."""
  return count(split_paths(directory, split)[0])


def read_split(directory: PathLike, split: str, *, num_classes: int | None = None,
               rows: Rows | None = None) -> tuple[np.ndarray, np.ndarray]:
  """One split from a directory of IDX files, whole or rows [start, stop): uint8 (N,H,W,C)
  images, int32 (N,) labels."""
  images_path, labels_path = split_paths(directory, split)
  images_file, labels_file = _open(images_path), _open(labels_path)  # each decompressed once
  num_images, num_labels = images_file[0].dims[0], labels_file[0].dims[0]
  if num_images != num_labels:
    raise DataError(f"{labels_path}: label count does not match {images_path} "
                    f"(expected {num_images}, got {num_labels}); {FIX}")
  images, labels = _array(images_path, images_file, rows), _array(labels_path, labels_file, rows)
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise DataError(f"{images_path}: not an image file (expected uint8 with 3 or 4 dims, "
                    f"got {images.dtype} with shape {images.shape}); {FIX}")
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise DataError(f"{labels_path}: not a label file (expected 1-d uint8, got "
                    f"{labels.dtype} with shape {labels.shape}); {FIX}")
  if num_classes is not None and len(labels) and labels.max() >= num_classes:
    raise DataError(f"{labels_path}: label out of range (expected [0, {num_classes}), "
                    f"got max {labels.max()}); {FIX}")
  if images.ndim == 3:
    images = images[..., None]
  return images, labels.astype(np.int32)
