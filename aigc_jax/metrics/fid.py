"""Frechet Inception Distance (FID) between two feature sets: Gaussian fit, Frechet distance.

Pure numpy in float64 on (N, D) features (e.g. `Classifier.features`). Reference: Heusel
et al. 2017 (the TTUR code's `calculate_frechet_distance`). Statistics files (`save_stats`,
`load_stats`) are pytorch-fid's and clean-fid's: an .npz of `mu` (D,) and `sigma` (D, D).
"""

from __future__ import annotations

import numpy as np

from aigc_jax.metrics.feature_arrays import as_features


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and covariance (D, D) of (N, D) features, in float64 (unbiased, N - 1)."""
  x = as_features(features, "feature_stats")
  return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)): the Frechet distance of two Gaussians.

  tr((C1 C2)^(1/2)) is the sum of the square roots of the eigenvalues of C1 C2, which are those
  of the symmetric S C2 S (S = C1^(1/2)): two symmetric eigendecompositions, stable where the
  covariances are singular (fewer samples than dimensions) and far faster than a general matrix
  square root; rounding's negative eigenvalues count as 0.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  cov1, cov2 = (np.atleast_2d(np.asarray(c, np.float64)) for c in (cov1, cov2))
  if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
    raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape}, {mu2.shape}; "
                     f"cov {cov1.shape}, {cov2.shape}")
  diff = mu1 - mu2
  values, vectors = np.linalg.eigh((cov1 + cov1.T) / 2)
  root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
  inner = root @ cov2 @ root
  trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)))
  return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_root)


def fid(features_a, features_b) -> float:
  """Frechet distance between Gaussians fitted to two (N, D) feature sets."""
  return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def save_stats(file, mu, sigma) -> None:
  """Writes `mu` and `sigma` (float64) to `file` (a path or a binary file) as pytorch-fid does."""
  np.savez(file, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))


def load_stats(path: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(mu (D,), sigma (D, D)) in float64 from a statistics .npz (pytorch-fid's, clean-fid's or
  `save_stats`'); ValueError, one line, unless both are there, finite, of matching shapes (and
  D = `dim` when given), without pickled objects."""
  try:
    with np.load(path, allow_pickle=False) as npz:
      if not {"mu", "sigma"} <= set(npz.files):
        raise ValueError(f"it holds {sorted(npz.files)}, not `mu` and `sigma`")
      mu, sigma = np.asarray(npz["mu"], np.float64), np.asarray(npz["sigma"], np.float64)
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read it as an .npz file ({type(e).__name__})") from None
  d = mu.shape[0] if mu.ndim == 1 else -1
  if mu.ndim != 1 or sigma.shape != (d, d) or (dim is not None and d != dim):
    raise ValueError(f"`mu` {mu.shape} and `sigma` {sigma.shape} are not (D,) and (D, D)" +
                     (f" with D = {dim}" if dim is not None else ""))
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
    raise ValueError("`mu` or `sigma` is not finite")
  return mu, sigma
