"""Kernel Inception Distance (KID): the unbiased MMD^2 of two feature sets, over subsets.

The subsets are drawn on the host (numpy, as before); the kernel sums run on the device in
float32 at full matmul precision, on k - 1 (the constant 1 cancels in MMD^2), so the values agree
with a float64 computation to ~1e-6 of the kernel's scale. Reference: Binkowski et al. 2018.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.metrics.feature_arrays import as_features

_KERNEL_BYTES = 1 << 28  # the subsets' kernel matrices computed at once: at most 256 MB


def cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(len(x), len(y)) kernel matrix k(a, b) = (a.b / D + 1)^3, in numpy."""
  k = x @ y.T / x.shape[1] + 1.0
  return k * k * k


def _kernel_minus_one(x: jax.Array, y: jax.Array) -> jax.Array:
  """cubic_kernel(x, y) - 1 = t^3 + 3t^2 + 3t with t = x.y / D, at full float32 precision."""
  t = jnp.dot(x, y.T, precision=jax.lax.Precision.HIGHEST) / x.shape[1]
  return t * (t * (t + 3.0) + 3.0)


def mmd2(x: jax.Array, y: jax.Array) -> jax.Array:
  """The unbiased MMD^2 of (m, D) `x` and `y` (m >= 2) with `cubic_kernel`."""
  m = x.shape[0]
  kxx, kyy, kxy = (_kernel_minus_one(u, v) for u, v in ((x, x), (y, y), (x, y)))
  off_diag = kxx.sum() - jnp.trace(kxx) + kyy.sum() - jnp.trace(kyy)
  return off_diag / (m * (m - 1)) - 2.0 * kxy.mean()


@functools.partial(jax.jit, static_argnames="batch")
def subset_mmd2(a: jax.Array, b: jax.Array, rows_a: jax.Array, rows_b: jax.Array,
                batch: int) -> jax.Array:
  """(S,) `mmd2` of the subsets a[rows_a[i]], b[rows_b[i]] ((S, m) rows), `batch` at a time."""
  return jax.lax.map(lambda rows: mmd2(a[rows[0]], b[rows[1]]), (rows_a, rows_b), batch_size=batch)


def kid(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: (mean, std) over subsets of the unbiased MMD^2.

  Kernel `cubic_kernel`. Each subset draws `subset_size` rows of each set without replacement
  (capped at the smaller set's size) with `np.random.default_rng(seed)`. When the subsets are
  the whole sets (both sets have `m` rows), every subset has the same MMD^2: it is computed once
  and the std is 0.
  """
  a, b = as_features(features_a, "kid features_a"), as_features(features_b, "kid features_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"kid: feature dims differ ({a.shape[1]} vs {b.shape[1]})")
  if num_subsets < 1:
    raise ValueError(f"kid: num_subsets must be >= 1, got {num_subsets}")
  m = min(subset_size, len(a), len(b))
  if m < 2:
    raise ValueError(f"kid: subset_size must be >= 2, got {m}")
  if m == len(a) == len(b):  # MMD^2 does not depend on the order of the rows
    return float(mmd2(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))), 0.0
  rng = np.random.default_rng(seed)
  rows = np.stack([(rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False))
                   for _ in range(num_subsets)]).astype(np.int32)  # (S, 2, m)
  batch = int(np.clip(_KERNEL_BYTES // (12 * m * m), 1, num_subsets))
  mmds = subset_mmd2(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                     jnp.asarray(rows[:, 0]), jnp.asarray(rows[:, 1]), batch)
  mmds = np.asarray(mmds, np.float64)
  return float(mmds.mean()), float(mmds.std())
