"""The checked input of every sample metric: a finite float64 (N, D) array."""

from __future__ import annotations

import numpy as np


def as_features(x, name: str, min_rows: int = 2) -> np.ndarray:
  """`x` as float64 (N, D) with N >= `min_rows`, all finite; else ValueError naming `name`."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < min_rows:
    raise ValueError(f"{name}: expected an (N, D) array with N >= {min_rows}, got {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name}: contains NaN or inf")
  return x
