"""Frechet Inception Distance (FID) between two feature sets: Gaussian fit, Frechet distance.

Pure numpy/scipy in float64 on (N, D) features (e.g. `Classifier.features`). Reference: Heusel
et al. 2017 (the TTUR code's `calculate_frechet_distance`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from aigc_jax.metrics.feature_arrays import as_features


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and covariance (D, D) of (N, D) features, in float64 (unbiased, N - 1)."""
  x = as_features(features, "feature_stats")
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
