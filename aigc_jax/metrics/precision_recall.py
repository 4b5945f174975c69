"""Improved precision and recall of generated features against real ones, by k-NN balls.

Pure numpy in float64 on (N, D) features; pairwise distances in row chunks of `_CHUNK`, so
memory is O(N * chunk). Reference: Kynkaanniemi et al. 2019.
"""

from __future__ import annotations

import numpy as np

from aigc_jax.metrics.feature_arrays import as_features

_CHUNK = 512  # rows of a pairwise-distance block: 512 x N float64 (40 MB for N = 10k)


def _sq_dists(x: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances (len(x), len(y)), clipped at 0."""
  d = (x * x).sum(axis=1)[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)
  return np.maximum(d, 0.0)


def knn_radii(features, k: int = 5) -> np.ndarray:
  """Squared distance from each row to its k-th nearest other row (chunked, O(N * chunk))."""
  x = as_features(features, "knn_radii", min_rows=k + 1)
  x_sq = (x * x).sum(axis=1)
  radii = np.empty(len(x))
  for start in range(0, len(x), _CHUNK):
    d = _sq_dists(x[start:start + _CHUNK], x, x_sq)
    # Index k of the sorted row: index 0 is the point itself (distance 0).
    radii[start:start + _CHUNK] = np.partition(d, k, axis=1)[:, k]
  return radii


def precision_recall(real, fake, k: int = 5) -> tuple[float, float]:
  """(precision, recall) of (N, D) `fake` features against (M, D) `real` ones, each in [0, 1].

  precision: the fraction of fake rows inside the ball of some real row, whose radius is the
  distance to its k-th nearest real neighbour (itself excluded); recall: the same with the roles
  of real and fake swapped.
  """
  real, fake = as_features(real, "real", k + 1), as_features(fake, "fake", k + 1)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"precision_recall: feature dims differ ({real.shape[1]} vs "
                     f"{fake.shape[1]})")
  real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
  fake_sq = (fake * fake).sum(axis=1)
  fake_covered = np.zeros(len(fake), bool)  # inside some real ball -> precision
  real_covered = np.zeros(len(real), bool)  # inside some fake ball -> recall
  for start in range(0, len(real), _CHUNK):
    d = _sq_dists(real[start:start + _CHUNK], fake, fake_sq)  # (chunk, N_fake)
    fake_covered |= (d <= real_radii[start:start + _CHUNK, None]).any(axis=0)
    real_covered[start:start + _CHUNK] = (d <= fake_radii[None, :]).any(axis=1)
  return float(fake_covered.mean()), float(real_covered.mean())
