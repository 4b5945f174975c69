"""Distances between two sets of features: FID, KID, precision/recall, IS, label accuracy.

Pure numpy/scipy in float64. Features are (N, D) arrays (e.g. `Classifier.features`); class
probabilities and logits are (N, C).

References: FID, Heusel et al. 2017 (the TTUR code's `calculate_frechet_distance`); KID,
Binkowski et al. 2018; precision/recall, Kynkaanniemi et al. 2019; IS, Salimans et al. 2016.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special

_CHUNK = 512  # rows of a pairwise-distance block: 512 x N float64 (40 MB for N = 10k)


def _features(x, name: str, min_rows: int = 2) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < min_rows:
    raise ValueError(f"{name}: expected an (N, D) array with N >= {min_rows}, got {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name}: contains NaN or inf")
  return x


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and covariance (D, D) of (N, D) features, in float64 (unbiased, N - 1)."""
  x = _features(features, "feature_stats")
  return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)): the Frechet distance of two Gaussians.

  As in the TTUR reference: if the square root is not finite (near-singular product), `eps` is
  added to both diagonals; a small imaginary part from rounding is dropped, a large one raises.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  cov1, cov2 = (np.atleast_2d(np.asarray(c, np.float64)) for c in (cov1, cov2))
  if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
    raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape}, {mu2.shape}; "
                     f"cov {cov1.shape}, {cov2.shape}")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(cov1 @ cov2)
  if not np.isfinite(covmean).all():
    offset = np.eye(cov1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if imag > 1e-3:
      raise ValueError(f"frechet_distance: sqrtm has an imaginary component {imag:.3g}; "
                       "the covariances are not positive semi-definite (too few samples?)")
    covmean = covmean.real
  return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def fid(features_a, features_b) -> float:
  """Frechet distance between Gaussians fitted to two (N, D) feature sets."""
  return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  k = x @ y.T / x.shape[1] + 1.0
  return k * k * k


def kid(features_a,
        features_b,
        num_subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: (mean, std) over subsets of the unbiased MMD^2.

  Kernel k(x, y) = (x.y / D + 1)^3. Each subset draws `subset_size` rows of each set without
  replacement (capped at the smaller set's size) with `np.random.default_rng(seed)`.
  """
  a, b = _features(features_a, "kid features_a"), _features(features_b, "kid features_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"kid: feature dims differ ({a.shape[1]} vs {b.shape[1]})")
  if num_subsets < 1:
    raise ValueError(f"kid: num_subsets must be >= 1, got {num_subsets}")
  m = min(subset_size, len(a), len(b))
  if m < 2:
    raise ValueError(f"kid: subset_size must be >= 2, got {m}")
  rng = np.random.default_rng(seed)
  mmds = np.empty(num_subsets)
  for i in range(num_subsets):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    kxx, kyy, kxy = (_cubic_kernel(u, v) for u, v in ((x, x), (y, y), (x, y)))
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    mmds[i] = off_diag - 2.0 * kxy.mean()
  return float(mmds.mean()), float(mmds.std())


def _sq_dists(x: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances (len(x), len(y)), clipped at 0."""
  d = (x * x).sum(axis=1)[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)
  return np.maximum(d, 0.0)


def knn_radii(features, k: int = 5) -> np.ndarray:
  """Squared distance from each row to its k-th nearest other row (chunked, O(N * chunk))."""
  x = _features(features, "knn_radii", min_rows=k + 1)
  x_sq = (x * x).sum(axis=1)
  radii = np.empty(len(x))
  for start in range(0, len(x), _CHUNK):
    d = _sq_dists(x[start:start + _CHUNK], x, x_sq)
    # Index k of the sorted row: index 0 is the point itself (distance 0).
    radii[start:start + _CHUNK] = np.partition(d, k, axis=1)[:, k]
  return radii


def precision_recall(real, fake, k: int = 5) -> tuple[float, float]:
  """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

  precision: the fraction of fake rows inside the ball of some real row, whose radius is the
  distance to its k-th nearest real neighbour (itself excluded); recall: the same with the roles
  of real and fake swapped. Pairwise distances are computed in row chunks.
  """
  real, fake = _features(real, "real", k + 1), _features(fake, "fake", k + 1)
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


def inception_score(class_probs, num_splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))): (mean, std) over `num_splits` contiguous splits.

  `class_probs` are (N, C) probabilities (softmax of the classifier's logits); IS lies in
  [1, C]: C for confident predictions spread evenly over the classes, 1 for a single class.
  """
  p = _features(class_probs, "inception_score class_probs", min_rows=num_splits)
  if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
    raise ValueError("inception_score: rows must be probabilities (apply a softmax to logits)")
  scores = []
  for part in np.array_split(p, num_splits):
    py = part.mean(axis=0, keepdims=True)
    kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, py)
    scores.append(np.exp(kl.sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))


def label_accuracy(class_logits, requested_labels) -> float:
  """Fraction of samples whose argmax class is the label they were generated for."""
  logits = np.asarray(class_logits)
  labels = np.asarray(requested_labels).reshape(-1)
  if logits.ndim != 2 or len(logits) != len(labels):
    raise ValueError(f"label_accuracy: expected (N, C) logits and (N,) labels, got "
                     f"{logits.shape} and {labels.shape}")
  return float((logits.argmax(axis=1) == labels).mean())
