"""Layers shared by model families."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def depth_to_space(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """(B, H, W, C*f*f) -> (B, H*f, W*f, C): the pixel shuffle of sub-pixel convolution."""
  b, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f"depth_to_space: {c} channels do not divide by factor^2 = {factor * factor}")
  out_c = c // (factor * factor)
  x = x.reshape(b, h, w, factor, factor, out_c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * factor, w * factor, out_c)


class SubPixelUpsample(nn.Module):
  """2x upsampling as a 3x3 convolution to 4x the channels followed by a pixel shuffle.

  On XLA:CPU the backward pass of a transposed convolution takes a slow path (about 20x its
  forward); this formulation uses ordinary convolutions only and is as expressive
  (Shi et al., 2016), so it is the default on every platform.
  """

  features: int
  factor: int = 2
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    x = nn.Conv(self.features * self.factor**2, (k, k), padding="SAME")(x)
    return depth_to_space(x, self.factor)


def torch_linear_init(fan_in: int):
  """(kernel_init, bias_init) of PyTorch's nn.Linear / nn.Conv: U(+-1/sqrt(fan_in)) for both.

  Used where a model reproduces a PyTorch reference; flax's default (lecun normal kernel, zero
  bias) has 3x the kernel variance.
  """
  bound = 1.0 / fan_in**0.5

  def uniform(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return uniform, uniform


def maybe_spectral(layer: nn.Module, enabled: bool, update_stats: bool):
  """`layer`, or `layer` wrapped in flax's `nn.SpectralNorm` when `enabled` (Miyato et al., 2018).

  The wrapper divides every >= 2-D parameter of `layer` (a conv kernel is viewed as
  (kh * kw * in, out)) by its top singular value, estimated by one step of power iteration per
  call. The iteration vector `u` and the estimate `sigma` live in the 'batch_stats' collection
  (next to BatchNorm's statistics), not in 'params': train with `update_stats=True` and
  `mutable=['batch_stats']`; evaluate with `update_stats=False` (one power step from the stored
  `u`, nothing written). Gradients flow through the weight only (u and v are stop-gradient).
  Call inside a compact method; returns a callable taking the layer's inputs.
  """
  if not enabled:
    return layer
  wrapped = nn.SpectralNorm(layer)
  return lambda *args, **kwargs: wrapped(*args, update_stats=update_stats, **kwargs)
