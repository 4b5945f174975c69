"""Kernel Inception Distance (KID): the unbiased MMD^2 of two feature sets, over subsets.

Pure numpy in float64 on (N, D) features. Reference: Binkowski et al. 2018.
"""

from __future__ import annotations

import numpy as np

from aigc_jax.metrics.feature_arrays import as_features


def cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(len(x), len(y)) kernel matrix k(a, b) = (a.b / D + 1)^3."""
  k = x @ y.T / x.shape[1] + 1.0
  return k * k * k


def kid(features_a,
        features_b,
        num_subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: (mean, std) over subsets of the unbiased MMD^2.

  Kernel `cubic_kernel`. Each subset draws `subset_size` rows of each set without replacement
  (capped at the smaller set's size) with `np.random.default_rng(seed)`.
  """
  a, b = as_features(features_a, "kid features_a"), as_features(features_b, "kid features_b")
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
    kxx, kyy, kxy = (cubic_kernel(u, v) for u, v in ((x, x), (y, y), (x, y)))
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    mmds[i] = off_diag - 2.0 * kxy.mean()
  return float(mmds.mean()), float(mmds.std())
