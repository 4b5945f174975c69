"""A U-Net for small images: residual blocks with GroupNorm, a sinusoidal time embedding that
scales and shifts each block's second normalisation (Nichol and Dhariwal, 2021), self-attention
at the lowest resolution and an optional class embedding added to the time embedding (Ho et al.,
2020).

`UNet(x (B, H, W, C), time (B,) in [0, 1], labels (B,) or None) -> (B, H, W, C)`. With
`num_classes` > 0 the label table has one more row, `num_classes`, the null label of
classifier-free guidance. `patch` > 1 folds patch x patch pixels into channels before the first
layer and unfolds them after the last (the network then runs at 1/patch the resolution).
Resolutions halve by 2x2 average pooling and double by nearest-neighbour repetition followed by a
3x3 convolution: no strided or transposed convolutions. `dtype` is the computation's;
parameters, the output, GroupNorm's statistics and the attention's softmax stay float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from aigc_jax.models.layers import depth_to_space


def time_embedding(time, dim: int, max_period: float = 10_000.0):
  """(B,) times in [0, 1] -> (B, dim) sinusoids of 1000 * time (the DDPM step's scale)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = 1000.0 * time.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def space_to_depth(x, factor: int):
  """(B, H, W, C) -> (B, H/f, W/f, C*f*f), the inverse of `depth_to_space`."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // factor, factor, w // factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // factor, w // factor, factor * factor * c)


class ResBlock(nn.Module):
  """GroupNorm, SiLU, 3x3 conv, GroupNorm scaled and shifted by the embedding, SiLU, 3x3 conv;
  residual. (An embedding added before a GroupNorm would be normalised away per group.)"""

  features: int
  groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb):
    h = nn.silu(nn.GroupNorm(self.groups, dtype=self.dtype)(x))
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(h)
    scale, shift = jnp.split(nn.Dense(2 * self.features, dtype=self.dtype)(nn.silu(emb)), 2, -1)
    h = nn.GroupNorm(self.groups, dtype=self.dtype)(h)
    h = nn.silu(h * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :])
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    return x + h


class Attention(nn.Module):
  """Multi-head self-attention over the pixels of (B, H, W, C); residual."""

  heads: int = 4
  groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = nn.GroupNorm(self.groups, dtype=self.dtype)(x).reshape(b, h * w, c)
    y = nn.MultiHeadDotProductAttention(self.heads, dtype=self.dtype, force_fp32_for_softmax=True,
                                        out_kernel_init=nn.initializers.zeros)(y, y)
    return x + y.reshape(b, h, w, c)


class UNet(nn.Module):
  """The denoiser; see the module docstring. One level per multiplier, each of `num_res_blocks`
  blocks of `base_features * multiplier` channels down and one more up; between the two paths,
  at the lowest resolution, a block, self-attention and a block."""

  out_channels: int
  base_features: int = 32
  multipliers: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  num_classes: int = 0
  patch: int = 1
  groups: int = 8
  heads: int = 4
  dtype: Any = jnp.float32

  def embed(self, time, labels):
    dim = 4 * self.base_features
    emb = time_embedding(time, self.base_features)
    emb = nn.Dense(dim, dtype=self.dtype)(nn.silu(nn.Dense(dim, dtype=self.dtype)(emb)))
    if self.num_classes:
      emb = emb + nn.Embed(self.num_classes + 1, dim, dtype=self.dtype)(labels)
    return emb

  @nn.compact
  def __call__(self, x, time, labels=None):
    emb = self.embed(time, labels)
    x = space_to_depth(x, self.patch) if self.patch > 1 else x
    h = nn.Conv(self.base_features, (3, 3), dtype=self.dtype)(x.astype(self.dtype))
    skips, last = [h], len(self.multipliers) - 1
    for level, mult in enumerate(self.multipliers):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.base_features * mult, self.groups, self.dtype)(h, emb)
        skips.append(h)
      if level != last:
        b, hh, ww, c = h.shape
        h = h.reshape(b, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
        skips.append(h)
    h = ResBlock(h.shape[-1], self.groups, self.dtype)(h, emb)
    h = Attention(self.heads, self.groups, self.dtype)(h)
    h = ResBlock(h.shape[-1], self.groups, self.dtype)(h, emb)
    for level, mult in reversed(list(enumerate(self.multipliers))):
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = ResBlock(self.base_features * mult, self.groups, self.dtype)(h, emb)
      if level:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = nn.Conv(self.base_features * self.multipliers[level - 1], (3, 3), dtype=self.dtype)(h)
    h = nn.silu(nn.GroupNorm(self.groups, dtype=self.dtype)(h))
    channels = self.out_channels * self.patch**2
    h = nn.Conv(channels, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    h = depth_to_space(h, self.patch) if self.patch > 1 else h
    return h.astype(jnp.float32)
