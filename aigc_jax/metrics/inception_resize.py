"""Images to the Inception network's input, resized to 299x299 as the FID references do.

- 'bilinear' (pytorch-fid): uint8 / 255, then `F.interpolate(mode='bilinear',
  align_corners=False)` (no antialiasing, edges clamped), then 2x - 1.
- 'clean' (clean-fid's "clean" resize, `make_resizer("PIL", False, "bicubic", (299, 299))`): each
  channel as a float image through PIL's antialiased bicubic resize (a = -0.5, the kernel widened
  by the downscaling factor, rows of weights normalized to 1, horizontal pass first), clipped to
  [0, 255]; then / 255 and 2x - 1, the input scaling of pytorch-fid's network.

Both are separable linear maps: each is a pair of (299, size) matrices built in float64 on the
host and applied on the device in float32 at full precision. Grayscale images are resized as one
channel and repeated to three.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SIZE = 299
MODES = ("bilinear", "clean")
_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=None)
def bilinear_matrix(in_size: int, out_size: int = SIZE) -> np.ndarray:
  """(out, in) weights of PyTorch's bilinear resize with align_corners=False, one axis: output
  i samples the input at (i + 0.5) * in / out - 0.5, clamped to [0, in - 1], rounded to float32
  as PyTorch's CPU kernel rounds it for float32 images (a float32 scale, then one rounding of
  scale * (i + 0.5) - 0.5, as by a fused multiply-add)."""
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  src = np.maximum((scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32), 0)
  low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = np.clip(src - low, 0, 1).astype(np.float64)
  weights = np.zeros((out_size, in_size))
  rows = np.arange(out_size)
  np.add.at(weights, (rows, low), 1.0 - frac)
  np.add.at(weights, (rows, high), frac)
  return weights


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  """PIL's bicubic kernel."""
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=None)
def pil_bicubic_matrix(in_size: int, out_size: int = SIZE) -> np.ndarray:
  """(out, in) weights of PIL's bicubic `Image.resize` of a float image, one axis (Pillow's
  `precompute_coeffs`: support 2 x max(in / out, 1), taps rounded as C does, rows summing
  to 1)."""
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  support = 2.0 * filter_scale
  weights = np.zeros((out_size, in_size))
  for i in range(out_size):
    center = (i + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    w = _bicubic((np.arange(lo, hi) - center + 0.5) / filter_scale)
    weights[i, lo:hi] = w / w.sum() if w.sum() != 0.0 else w
  return weights


def as_images(images) -> np.ndarray:
  """uint8 (N, H, W) or (N, H, W, C) with C 1 or 3 -> uint8 (N, H, W, C); else ValueError."""
  x = np.asarray(images)
  x = x[..., None] if x.ndim == 3 else x
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3) or not len(x):
    raise ValueError(f"Inception features take uint8 images (N, H, W) or (N, H, W, C) with C 1 "
                     f"or 3, N >= 1; got {x.dtype}{x.shape}: scale [0, 1] floats by 255, round "
                     "and cast to uint8")
  return x


def _apply(matrix: np.ndarray, x: jax.Array, axis: str) -> jax.Array:
  """`matrix` (out, in) applied along the rows ('h') or columns ('w') of (N, H, W, C) `x`."""
  m = jnp.asarray(matrix, jnp.float32)
  spec = "oh,nhwc->nowc" if axis == "h" else "ow,nhwc->nhoc"
  return jnp.einsum(spec, m, x, precision=_HIGHEST)


def to_unit(images: jax.Array, mode: str = "bilinear") -> jax.Array:
  """uint8 (N, H, W, C), C 1 or 3 -> float32 (N, 299, 299, 3) in [0, 1], resized as `mode`'s
  reference does (the module's docstring)."""
  if mode not in MODES:
    raise ValueError(f"resize mode must be one of {MODES}, got {mode!r}")
  x = jnp.asarray(images).astype(jnp.float32)
  h, w = x.shape[1:3]
  if mode == "bilinear":
    x = _apply(bilinear_matrix(w), _apply(bilinear_matrix(h), x / 255.0, "h"), "w")
  else:
    x = _apply(pil_bicubic_matrix(h), _apply(pil_bicubic_matrix(w), x, "w"), "h")
    x = jnp.clip(x, 0.0, 255.0) / 255.0
  return jnp.broadcast_to(x, x.shape[:3] + (3,))


def preprocess(images: jax.Array, mode: str = "bilinear") -> jax.Array:
  """uint8 (N, H, W, C) -> the network's input: `to_unit` scaled to [-1, 1] (2x - 1)."""
  return 2.0 * to_unit(images, mode) - 1.0
