"""GAN generators and discriminators (MLP and DCGAN), optionally class-conditional.

Images are NHWC in [-1, 1]: generators end in tanh and return (B, H, W, C); discriminators
return logits of shape (B,) (and class logits (B, num_classes) with an ACGAN head).

Conditioning: a generator embeds the label (`nn.Embed(num_classes, z_dim)`) and multiplies it
into z (as PyTorch-GAN's ACGAN) or concatenates it (as its cGAN); a discriminator is a projection
discriminator (Miyato & Koyama, 2018): logit = psi(h) + <embed(y), h> for its last features h.

Mutable state is in 'batch_stats': BatchNorm statistics and, with `spectral_norm=True`, the
power-iteration vectors of spectral normalization (see `layers.maybe_spectral`). Train with
`train=True, mutable=['batch_stats']`; evaluate with `train=False`. Under a data axis (pmap or
shard_map), pass `axis_name` so that BatchNorm normalizes with the global batch's statistics.

`dtype` is the computation's (float32 or bfloat16): parameters and BatchNorm statistics stay
float32, and images and logits come out in float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import SubPixelUpsample
from aigc_jax.models.layers import TransposeUpsample
from aigc_jax.models.layers import conv_general_dilated
from aigc_jax.models.layers import init_kwargs
from aigc_jax.models.layers import maybe_spectral
from aigc_jax.models.layers import resolution_stages

UPSAMPLE_MODES = ("subpixel", "resize_conv", "transpose")
LABEL_MODES = ("multiply", "concat")
D_CONVS = ("custom_vjp", "lax")  # layers.conv_general_dilated or lax.conv_general_dilated


def _condition_z(z: jnp.ndarray, label, num_classes: int, label_mode: str,
                 dtype=jnp.float32) -> jnp.ndarray:
  """z, or z combined with a learned label embedding of z's width."""
  if not num_classes:
    return z
  if label is None:
    raise ValueError(f"a conditional generator (num_classes={num_classes}) needs a label")
  if label_mode not in LABEL_MODES:
    raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
  emb = nn.Embed(num_classes, z.shape[-1], name="label_embed", dtype=dtype)(label)
  z = z.astype(dtype)
  return z * emb if label_mode == "multiply" else jnp.concatenate([z, emb], axis=-1)


class MLPGenerator(nn.Module):
  """z (B, Z) -> [Dense -> BatchNorm -> LeakyReLU(0.2)] per hidden width -> Dense -> tanh.

  As PyTorch-GAN's gan.py, the first hidden layer has no BatchNorm (pass
  hidden_dims=(128, 256, 512, 1024) for its exact widths). Its `nn.BatchNorm1d(n, 0.8)` sets
  *eps* = 0.8 (the second positional argument), momentum stays torch's default 0.1; flax's
  momentum is the weight of the old running average (torch's is the new batch's), so torch
  0.1 == flax 0.9: hence bn_epsilon=0.8, bn_momentum=0.9 here.
  """

  image_shape: Sequence[int] = (28, 28, 1)
  hidden_dims: Sequence[int] = (256, 512, 1024)
  num_classes: int = 0
  label_mode: str = "multiply"  # or 'concat'
  use_bn: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 0.8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, label=None, train: bool = True, axis_name: str | None = None):
    h = _condition_z(z, label, self.num_classes, self.label_mode, self.dtype)
    for i, width in enumerate(self.hidden_dims):
      h = nn.Dense(width, dtype=self.dtype)(h)
      if self.use_bn and i > 0:
        h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=self.bn_epsilon, axis_name=axis_name, dtype=self.dtype)(h)
      h = nn.leaky_relu(h, 0.2)
    h = nn.tanh(nn.Dense(math.prod(self.image_shape), dtype=self.dtype)(h))
    return h.astype(jnp.float32).reshape((z.shape[0],) + tuple(self.image_shape))


def _projection_logit(h, label, num_classes: int, spectral_norm: bool, train: bool,
                      dtype=jnp.float32, torch_init: bool = False):
  """psi(h) (+ <embed(y), h> when conditional): the (B,) float32 logit of a projection D."""
  dense = nn.Dense(1, name="logit", dtype=dtype, **init_kwargs(torch_init, h.shape[-1]))
  logit = maybe_spectral(dense, spectral_norm, train)(h)[:, 0]
  logit = logit.astype(jnp.float32)
  if not num_classes:
    return logit
  if label is None:
    raise ValueError(f"a conditional discriminator (num_classes={num_classes}) needs a label")
  embed = maybe_spectral(nn.Embed(num_classes, h.shape[-1], name="label_embed", dtype=dtype),
                         spectral_norm, train)
  return logit + jnp.sum(embed(label) * h, axis=-1, dtype=jnp.float32)


class MLPDiscriminator(nn.Module):
  """flatten -> [Dense -> LeakyReLU(0.2)] per width -> logit (B,); projection if conditional."""

  hidden_dims: Sequence[int] = (512, 256)
  num_classes: int = 0
  spectral_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, label=None, train: bool = True, axis_name: str | None = None):
    del axis_name  # no BatchNorm: nothing to share across devices
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden_dims:
      dense = nn.Dense(width, dtype=self.dtype)
      h = nn.leaky_relu(maybe_spectral(dense, self.spectral_norm, train)(h), 0.2)
    return _projection_logit(h, label, self.num_classes, self.spectral_norm, train, self.dtype)


def _upsample(x, features: int, mode: str, name: str, dtype, transpose_impl: str = "subpixel",
              torch_init: bool = False):
  """2x spatial upsampling to `features` channels: sub-pixel, nearest + conv, or transposed conv."""
  if mode == "subpixel":
    return SubPixelUpsample(features, torch_init=torch_init, name=name, dtype=dtype)(x)
  if mode == "resize_conv":
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return nn.Conv(features, (3, 3), padding="SAME", name=name, dtype=dtype,
                   **init_kwargs(torch_init, 9 * x.shape[-1]))(x)
  if mode == "transpose":
    return TransposeUpsample(features, impl=transpose_impl, torch_init=torch_init, name=name,
                             dtype=dtype)(x)
  raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")


class DCGANGenerator(nn.Module):
  """z -> Dense to (H/4, W/4, F) -> BN, ReLU -> 2x up to F/2 -> BN, ReLU -> 2x up to C -> tanh.

  That is at sides 28 (from 7x7) and 32 (from 8x8); at side 64 it starts at 8x8 too, with one
  more stage: ... 2x up to F/2 -> BN, ReLU -> 2x up to F/4 -> BN, ReLU -> 2x up to C (each stage
  halves the width; `layers.IMAGE_SIDES` has the stages per side, and other sides raise).
  With `final_features` > 0 the last upsampling outputs that many channels instead, followed
  by BN, ReLU and a 3x3 convolution to C at full resolution (the README has its measured effect).

  `upsample`: 'subpixel' (3x3 conv to 4x channels + pixel shuffle, the default: fast backward on
  XLA:CPU), 'resize_conv' (nearest 2x then 3x3 conv) or 'transpose' (the classic DCGAN's 4x4
  stride-2 transposed conv: `layers.TransposeUpsample`, computed by `transpose_impl`).
  BatchNorm uses torch's defaults (momentum 0.1 == flax 0.9, eps 1e-5). `torch_init`: the dense
  and conv layers initialised as PyTorch's (`layers.init_kwargs`), else flax's defaults.
  """

  image_shape: Sequence[int] = (28, 28, 1)
  base_features: int = 128
  num_classes: int = 0
  label_mode: str = "multiply"
  upsample: str = "subpixel"
  final_features: int = 0
  transpose_impl: str = "subpixel"  # a layers.TRANSPOSE_IMPLS formulation of upsample='transpose'
  torch_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, label=None, train: bool = True, axis_name: str | None = None):
    height, width, channels = self.image_shape
    stages = resolution_stages(self.image_shape, "DCGANGenerator")
    if self.upsample not in UPSAMPLE_MODES:
      raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")

    def bn_relu(h):
      return nn.relu(
          nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       axis_name=axis_name, dtype=self.dtype)(h))

    def up(h, features, name):
      return _upsample(h, features, self.upsample, name, self.dtype, self.transpose_impl,
                       self.torch_init)

    f, side = self.base_features, height // 2**stages
    h = _condition_z(z, label, self.num_classes, self.label_mode, self.dtype)
    h = nn.Dense(side * side * f, dtype=self.dtype, **init_kwargs(self.torch_init, h.shape[-1]))(h)
    h = bn_relu(h.reshape(-1, side, side, f))
    for i in range(stages - 1):
      h = bn_relu(up(h, f // 2**(i + 1), f"up_{i}"))
    last = f"up_{stages - 1}"
    if not self.final_features:
      return nn.tanh(up(h, channels, last)).astype(jnp.float32)
    h = bn_relu(up(h, self.final_features, last))
    out = nn.Conv(channels, (3, 3), padding="SAME", name="out", dtype=self.dtype,
                  **init_kwargs(self.torch_init, 9 * self.final_features))(h)
    return nn.tanh(out).astype(jnp.float32)


class DCGANDiscriminator(nn.Module):
  """Conv 4x4 s2 (F) -> LeakyReLU -> Conv 4x4 s2 (2F) [-> BN] -> LeakyReLU -> flatten -> logit.

  That is for images of side 28 and 32 (flattened at 7x7 or 8x8); side 64 has one more stage,
  Conv 4x4 s2 (4F) [-> BN] -> LeakyReLU, to 8x8 (each conv doubles the width; other sides
  raise: `layers.IMAGE_SIDES`). BatchNorm on every conv but the first if `batch_norm` and not
  `spectral_norm` (which normalizes every conv and dense layer instead). Conditional
  (num_classes > 0): a projection discriminator, or, with `aux_classifier=True`, ACGAN's
  discriminator, which takes no label and returns (logit (B,), class_logits (B, num_classes)).
  With `rotation_head=True` it returns (that output, rotation_logits (B, 4)): SS-GAN's head that
  tells which multiple of 90 degrees an image was rotated by (Chen et al., 2019). With
  `conv='custom_vjp'` the convolutions use `layers.conv_general_dilated`, whose second
  derivatives (gradient penalties, R1) stay off XLA:CPU's slow path; 'lax' is
  `lax.conv_general_dilated`, the same function. Logits are float32. `torch_init`: the conv and
  dense layers initialised as PyTorch's (`layers.init_kwargs`), else flax's defaults.
  """

  base_features: int = 64
  num_classes: int = 0
  spectral_norm: bool = False
  aux_classifier: bool = False
  batch_norm: bool = True
  rotation_head: bool = False
  conv: str = "custom_vjp"  # one of D_CONVS
  torch_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, label=None, train: bool = True, axis_name: str | None = None):
    if self.aux_classifier and not self.num_classes:
      raise ValueError("aux_classifier=True needs num_classes > 0")
    if self.conv not in D_CONVS:
      raise ValueError(f"conv must be one of {D_CONVS}, got {self.conv!r}")
    sn, f, dtype = self.spectral_norm, self.base_features, self.dtype
    impl = conv_general_dilated if self.conv == "custom_vjp" else jax.lax.conv_general_dilated

    def conv(features, fan_in):
      return nn.Conv(features, (4, 4), strides=(2, 2), padding="SAME", dtype=dtype,
                     conv_general_dilated=impl, **init_kwargs(self.torch_init, fan_in))

    def head(features, name, h):  # float32 logits
      kwargs = init_kwargs(self.torch_init, h.shape[-1])
      dense = nn.Dense(features, name=name, dtype=dtype, **kwargs)
      return maybe_spectral(dense, sn, train)(h).astype(jnp.float32)

    h = nn.leaky_relu(maybe_spectral(conv(f, 16 * x.shape[-1]), sn, train)(x), 0.2)
    for i in range(1, resolution_stages(x.shape[1:], "DCGANDiscriminator")):
      h = maybe_spectral(conv(2**i * f, 16 * h.shape[-1]), sn, train)(h)
      if self.batch_norm and not sn:
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         axis_name=axis_name, dtype=dtype)(h)
      h = nn.leaky_relu(h, 0.2)
    h = h.reshape(x.shape[0], -1)
    if self.aux_classifier:
      out = head(1, "logit", h)[:, 0], head(self.num_classes, "class_logits", h)
    else:
      out = _projection_logit(h, label, self.num_classes, sn, train, dtype, self.torch_init)
    if not self.rotation_head:
      return out
    return out, head(4, "rotation_logits", h)


def rotate_quarters(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Example i of x (B, H, H, C) turned by (i mod 4) * 90 degrees, and those rotation indices."""
  if x.shape[1] != x.shape[2]:
    raise ValueError(f"rotating by 90 degrees needs square images, got {x.shape[1:3]}")
  rotation = jnp.arange(x.shape[0]) % 4
  turned = jnp.stack([jnp.rot90(x, k, axes=(1, 2)) for k in range(4)])  # (4, B, H, W, C)
  return turned[rotation, jnp.arange(x.shape[0])], rotation
