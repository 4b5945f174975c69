"""Pseudo-labels for an unconditional GAN: balanced k-means of the training images' pixels.

A self-conditioned GAN (after Liu et al., 2020, who cluster discriminator features) trains a
class-conditional G and D on cluster ids instead of labels and samples the ids uniformly. Here
the clusters are computed once, from pixels, before training. They are balanced (every cluster
holds N // k or N // k + 1 images), so sampling ids uniformly matches the data: no cluster
frequencies need storing beside the checkpoint. No label is read. A training run keeps its ids
in its workdir (`workdir_clusters`), so a resumed run conditions on the same clusters even where
floating point would cluster differently.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from aigc_jax import progress as progress_lib
from aigc_jax import safe_files
from aigc_jax.data import DataError

log = logging.getLogger(__name__)


def balanced_assign(distances: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Greedy assignment under capacities: the (row, cluster) pairs in order of distance, each
  row to the nearest cluster that still has room. distances (N, k); sizes (k,) summing to N."""
  num, k = distances.shape
  if int(sizes.sum()) != num:
    raise ValueError(f"cluster sizes sum to {int(sizes.sum())}, not the {num} rows")
  assign = np.full(num, -1, np.int64)
  room = sizes.astype(np.int64).copy()
  left = num
  for flat in np.argsort(distances, axis=None, kind="stable").tolist():
    row, cluster = divmod(flat, k)
    if assign[row] < 0 and room[cluster] > 0:
      assign[row] = cluster
      room[cluster] -= 1
      left -= 1
      if not left:
        break
  return assign


def balanced_kmeans(x: np.ndarray, k: int, *, iterations: int = 10, seed: int = 0,
                    progress: bool = False) -> np.ndarray:
  """Cluster ids (N,) int32 of the rows of x (N, D) into k clusters of N // k or N // k + 1 rows:
  k-means++ seeding, then Lloyd iterations with `balanced_assign` as the assignment step.
  `progress`: a progress bar over the seeding and the iterations."""
  x = np.asarray(x, np.float32)
  num = x.shape[0]
  if not 1 <= k <= num:
    raise ValueError(f"k-means needs 1 <= k <= the {num} rows, got k={k}")
  rng = np.random.default_rng(seed)
  norms = np.sum(x * x, axis=1)

  def squared_distances(centers):
    return np.maximum(norms[:, None] - 2.0 * x @ centers.T + np.sum(centers**2, axis=1), 0.0)

  bar = progress_lib.bar(k + iterations, "k-means", "pass", shown=progress, leave=False)
  centers = x[rng.integers(num)][None]
  nearest = squared_distances(centers)[:, 0].astype(np.float64)
  for _ in range(1, k):  # k-means++: the next center far from the chosen ones
    total = nearest.sum()
    pick = rng.choice(num, p=nearest / total) if total > 0 else rng.integers(num)  # all equal
    centers = np.concatenate([centers, x[pick][None]])
    nearest = np.minimum(nearest, squared_distances(centers[-1:])[:, 0])
    bar.update()
  sizes = np.full(k, num // k) + (np.arange(k) < num % k)
  for _ in range(iterations):
    assign = balanced_assign(squared_distances(centers), sizes)
    centers = np.stack([x[assign == j].mean(axis=0) for j in range(k)])
    bar.update()
  ids = balanced_assign(squared_distances(centers), sizes).astype(np.int32)
  bar.update()
  bar.close()
  return ids


def pixel_clusters(images: np.ndarray, k: int, seed: int = 0, progress: bool = True) -> np.ndarray:
  """Balanced k-means ids of uint8 images (N, H, W, C) by their pixels scaled to [0, 1]."""
  start = time.perf_counter()
  log.info("clustering %d images into %d balanced pixel k-means clusters", len(images), k)
  flat = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
  ids = balanced_kmeans(flat, k, seed=seed, progress=progress)
  log.info("%d balanced pixel k-means clusters of %d images in %.1f s", k, len(images),
           time.perf_counter() - start)
  return ids


FILENAME = "pixel_clusters.npy"


def workdir_clusters(workdir: str, images: np.ndarray, k: int, seed: int = 0,
                     write: bool = True) -> np.ndarray:
  """`pixel_clusters` of the images, read from workdir/pixel_clusters.npy when a run saved them
  there, else computed and (if `write`) saved atomically for the runs that resume from it."""
  path = os.path.join(workdir, FILENAME)
  if os.path.exists(path):
    ids = np.load(path)
    if ids.shape != (len(images),) or ids.min() < 0 or ids.max() >= k:
      raise DataError(f"{path} holds cluster ids of shape {ids.shape} in [{ids.min()}, "
                      f"{ids.max()}], not {len(images)} ids in [0, {k}): the workdir was "
                      "trained on other data or another pixel_clusters; use a new workdir")
    return ids.astype(np.int32)
  ids = pixel_clusters(images, k, seed=seed)
  if write:
    os.makedirs(workdir, exist_ok=True)
    safe_files.atomic_write(path, lambda f: np.save(f, ids))
  return ids
