"""A folder of the user's images (PNG and JPEG) as a dataset: its files, their class labels, and
each file decoded to one shape.

Splits: with `train/` and `test/` subfolders, those; otherwise every tenth file of the sorted
listing (the 10th, 20th, ...) is the test split and the rest the train split. Labels: the
subfolders of a split that hold images are its classes, in sorted order; images directly in it
are a class of their own, named '.', when there are subfolder classes too, and class 0 otherwise.

An image is converted to grayscale or RGB, its shorter side resized to `size` (`resize`: 'area',
or 'bicubic', both antialiased) and its centre cropped to `size` x `size`. Files that cannot be
used (unreadable, truncated, empty, CMYK, 16-bit, or an odd size: a side under 8 pixels or one
more than 4 times the other) are skipped, and the caller says how many and which.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import NamedTuple

import numpy as np
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg")
RESIZE = {"area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}
TEST_EVERY = 10  # without train/ and test/ subfolders: file i is a test file when i % 10 == 9
MIN_SIDE, MAX_ASPECT = 8, 4.0
_UNSUPPORTED_MODES = {
    "CMYK": "CMYK", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer",
    "F": "floating-point"
}


class Listing(NamedTuple):
  """A split's image files, their int32 class labels and the classes' names."""

  paths: list[str]
  labels: np.ndarray
  classes: list[str]


def _images_under(directory: str) -> list[str]:
  """Image files under `directory` (any depth), sorted, by extension (case-insensitive)."""
  found = []
  for parent, dirs, files in os.walk(directory, followlinks=False):
    dirs.sort()
    found += [os.path.join(parent, f) for f in files if f.lower().endswith(EXTENSIONS)]
  return sorted(found)


def split_root(root: str, split: str) -> tuple[str, bool]:
  """(the directory of `split`'s files, whether it is shared with the other split)."""
  if all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test")):
    return os.path.join(root, split), False
  return root, True


@functools.lru_cache(maxsize=8)
def list_split(root: str, split: str) -> Listing:
  """The files, labels and classes of `split` ('train' or 'test') of the folder `root` (listed
  once per process)."""
  directory, shared = split_root(root, split)
  paths = _images_under(directory)
  if shared:
    test = [i % TEST_EVERY == TEST_EVERY - 1 for i in range(len(paths))]
    paths = [p for p, t in zip(paths, test) if t == (split == "test")]
  tops = [os.path.relpath(p, directory).split(os.sep)[0] for p in paths]
  names = [t if t != os.path.basename(p) else "." for t, p in zip(tops, paths)]
  classes = sorted(set(names) - {"."})
  classes = (["."] if "." in names else []) + classes if classes else ["."]
  index = {c: i for i, c in enumerate(classes)}
  return Listing(paths, np.asarray([index[n] for n in names], np.int32), classes)


def decode(path: str, size: int, channels: int, resize: str = "area") -> np.ndarray | str:
  """uint8 (size, size, channels) of the image at `path`, or why it cannot be used."""
  try:
    with Image.open(path) as image:
      image.load()  # decodes now: a truncated file fails here
      return _problem(image) or fit(image, size, channels, resize)
  except Image.UnidentifiedImageError:
    return "unreadable (not an image PIL can decode)"
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    return f"unreadable ({type(e).__name__}: {str(e)[:80]})"


def fit(image: Image.Image, size: int, channels: int, resize: str = "area") -> np.ndarray:
  """uint8 (size, size, channels): `image` in grayscale or RGB, its shorter side resized to
  `size` and its centre cropped."""
  image = image.convert("L" if channels == 1 else "RGB")
  width, height = image.size
  scale = size / min(width, height)
  new = (max(size, round(width * scale)), max(size, round(height * scale)))
  if new != image.size:
    image = image.resize(new, RESIZE[resize], reducing_gap=None)
  left, top = (new[0] - size) // 2, (new[1] - size) // 2
  pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)
  return pixels.reshape(size, size, channels)


def _problem(image: Image.Image) -> str | None:
  """Why a decoded image is not used, or None."""
  if image.mode in _UNSUPPORTED_MODES:
    return f"{_UNSUPPORTED_MODES[image.mode]} pixels ({image.mode})"
  width, height = image.size
  if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
    return f"an odd size ({width}x{height})"
  return None


def usable(listing: Listing, i: int, size: int, channels: int,
           resize: str = "area") -> tuple[np.ndarray | None, int, list[tuple[str, str]]]:
  """(pixels, label) of file i of the listing or, where it is unusable, of the next usable one
  after it (wrapping around; pixels None when none is), and [(path, why)] of the files passed
  over."""
  passed = []
  for j in range(i, i + len(listing.paths)):
    path = listing.paths[j % len(listing.paths)]
    pixels = decode(path, size, channels, resize)
    if not isinstance(pixels, str):
      return pixels, int(listing.labels[j % len(listing.paths)]), passed
    passed.append((path, pixels))
  return None, 0, passed


_WORKER = {}  # in a decoding worker process: its (listing, size, channels, resize)


def start_worker(listing: Listing, size: int, channels: int, resize: str, parent: int) -> None:
  """A decoding worker process's initializer: the listing it reads `usable` rows of, and a
  watch that ends the worker once its parent process (pid `parent`) is gone, however it ended."""
  _WORKER["args"] = (listing, size, channels, resize)
  threading.Thread(target=_exit_after, args=(parent,), daemon=True).start()


def _exit_after(parent: int) -> None:
  while os.getppid() == parent:
    time.sleep(0.5)
  os._exit(0)  # pylint: disable=protected-access  (an orphan: nothing of it is wanted)


def usable_in_worker(i: int) -> tuple[np.ndarray | None, int, list[tuple[str, str]]]:
  """`usable` row i of the worker's listing (see `start_worker`)."""
  listing, size, channels, resize = _WORKER["args"]
  return usable(listing, i, size, channels, resize)


def load(
    listing: Listing, size: int, channels: int, resize: str = "area",
    rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
  """(uint8 (N, size, size, channels) images, int32 (N,) labels, [(path, why)] of the files
  skipped) of the listing's files [start, stop) (all by default)."""
  start, stop = rows or (0, len(listing.paths))
  images, labels, skipped = [], [], []
  for path, label in zip(listing.paths[start:stop], listing.labels[start:stop]):
    pixels = decode(path, size, channels, resize)
    if isinstance(pixels, str):
      skipped.append((path, pixels))
    else:
      images.append(pixels)
      labels.append(label)
  shape = (len(images), size, size, channels)
  return (np.stack(images) if images else np.zeros(shape, np.uint8), np.asarray(labels,
                                                                                np.int32), skipped)
