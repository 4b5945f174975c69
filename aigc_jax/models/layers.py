"""Layers shared by model families."""

from __future__ import annotations

import functools
from typing import Any

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
  torch_init: bool = False  # PyTorch's initialisation (init_kwargs)
  dtype: Any = jnp.float32  # of the computation; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    x = nn.Conv(self.features * self.factor**2, (k, k), padding="SAME", dtype=self.dtype,
                **init_kwargs(self.torch_init, k * k * x.shape[-1]))(x)
    return depth_to_space(x, self.factor)


class TransposeUpsample(nn.Module):
  """The DCGAN layer, a 4x4 stride-2 transposed convolution (output 2H x 2W: PyTorch's
  ConvTranspose2d(k=4, s=2, p=1), flax's ConvTranspose((4, 4), (2, 2), 'SAME')), computed as a
  2x2 convolution to 4x the channels on the input padded by 1, a pixel shuffle and a 1-pixel crop.

  Each output pixel of a 4x4 stride-2 transposed convolution sees a 2x2 input window, one of four
  kernel phases: the same function, with the same weights (16 x in x out) rearranged, but only
  a forward convolution, whose gradients stay off XLA:CPU's slow transposed-convolution path.
  `kernel` (2, 2, in, (phase_y, phase_x, out)) maps to the flax ConvTranspose kernel K as
  K[2 dy + 1 - phase_y, 2 dx + 1 - phase_x] = kernel[dy, dx, :, (phase_y, phase_x)].

  `impl`: 'subpixel' (the above) or 'conv_transpose' (`lax.conv_transpose` with K, the plain
  formulation for GPUs and TPUs); both take the same parameters and compute the same function.
  `torch_init=True` draws them as PyTorch's ConvTranspose2d does, whose fan-in is 16 x out.
  """

  features: int
  impl: str = "subpixel"
  torch_init: bool = False  # PyTorch's initialisation (init_kwargs)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.impl not in TRANSPOSE_IMPLS:
      raise ValueError(f"TransposeUpsample impl must be one of {TRANSPOSE_IMPLS}, got "
                       f"{self.impl!r}")
    inits = {
        "kernel_init": nn.initializers.lecun_normal(), "bias_init": nn.initializers.zeros,
        **init_kwargs(self.torch_init, 16 * self.features)
    }
    bias = self.param("bias", inits["bias_init"], (self.features,)).astype(self.dtype)
    if self.impl == "conv_transpose":
      kernel = self.param(
          "Conv_0",
          lambda key: {"kernel": inits["kernel_init"]
                                 (key, (2, 2, x.shape[-1], 4 * self.features))})["kernel"]
      y = jax.lax.conv_transpose(x.astype(self.dtype),
                                 transpose_kernel(kernel).astype(self.dtype), (2, 2), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return y + bias
    # explicit padding: a padded 2x2 conv's gradient is slow
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.Conv(4 * self.features, (2, 2), padding="VALID", use_bias=False, dtype=self.dtype,
                kernel_init=inits["kernel_init"])(x)
    return depth_to_space(x, 2)[:, 1:-1, 1:-1] + bias


TRANSPOSE_IMPLS = ("subpixel", "conv_transpose")

# The square image sides the convolutional models (DCGAN, conv VAE, U-Net) build for, and their
# number of 2x resolution stages: 28 = 7 * 2^2 and 32 = 8 * 2^2 (the layouts from before 64 was
# supported, unchanged), 64 = 8 * 2^3, one stage more.
IMAGE_SIDES = {28: 2, 32: 2, 64: 3}


def resolution_stages(image_shape, what: str) -> int:
  """The 2x resolution stages of `what` (a model's name, for the error) for (H, W, C) images:
  IMAGE_SIDES[H]. ValueError naming the supported sides for other shapes."""
  height, width = image_shape[0], image_shape[1]
  if height != width or height not in IMAGE_SIDES:
    raise ValueError(f"{what} builds for square images of side {', '.join(map(str, IMAGE_SIDES))}"
                     f" pixels, got {height}x{width}")
  return IMAGE_SIDES[height]


def transpose_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
  """TransposeUpsample's (2, 2, in, 4 * out) kernel as the (4, 4, in, out) transposed-conv K."""
  _, _, c_in, c4 = kernel.shape
  k = kernel.reshape(2, 2, c_in, 2, 2, c4 // 4).transpose(0, 3, 1, 4, 2, 5)  # dy, py, dx, px
  k = k.reshape(4, 4, c_in, c4 // 4)  # row 2 dy + py holds K's row 2 dy + 1 - py
  order = jnp.array([1, 0, 3, 2])
  return k[order][:, order]


def init_kwargs(torch_init: bool, fan_in: int) -> dict:
  """`nn.Dense` / `nn.Conv` keyword arguments: none (flax's lecun normal kernel, zero bias), or
  with `torch_init` PyTorch's nn.Linear / nn.Conv initialisation, U(+-1/sqrt(fan_in)) for kernel
  and bias (`fan_in` as PyTorch counts it).

  Used where a model reproduces a PyTorch reference; flax's default has 3x the kernel variance.
  """
  if not torch_init:
    return {}
  bound = 1.0 / fan_in**0.5

  def uniform(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return {"kernel_init": uniform, "bias_init": uniform}


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


# Convolutions whose derivatives of every order stay on XLA:CPU's fast paths.
#
# A gradient penalty (WGAN-GP, R1) differentiates the critic's input gradient w.r.t. its
# weights. For a strided convolution XLA derives that term as a reversed, dilated convolution
# that XLA:CPU runs far slower than the equivalent weight gradient (benchmarks/README.md has
# the measurement). A convolution y = conv(x, w) is
# bilinear, so all its derivatives are one of three linear maps: conv itself and its
# transposes in x (the input gradient) and in w (the weight gradient). Giving each a custom
# VJP written with the others keeps every derivative in the first-order forms.


def _lax_conv(x, w, conv_args):
  strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups, precision = conv_args
  return jax.lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation,
                                      dimension_numbers, groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, conv_args):
  return _lax_conv(x, w, conv_args)


def _conv_fwd(x, w, conv_args):
  return _lax_conv(x, w, conv_args), (x, w)


def _conv_bwd(conv_args, residuals, g):
  x, w = residuals
  return (_conv_transpose(w, g, conv_args, 0,
                          x.shape), _conv_transpose(x, g, conv_args, 1, w.shape))


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_transpose(other, g, conv_args, slot, shape):
  """The transpose of v -> conv(v, other) (slot 0: the input gradient, other = w) or of
  v -> conv(other, v) (slot 1: the weight gradient, other = x), applied to g; v has `shape`."""
  spec = jax.ShapeDtypeStruct(shape, g.dtype)
  conv = (lambda v: _lax_conv(v, other, conv_args)) if slot == 0 else (
      lambda v: _lax_conv(other, v, conv_args))
  return jax.linear_transpose(conv, spec)(g)[0]


def _conv_transpose_fwd(other, g, conv_args, slot, shape):
  return _conv_transpose(other, g, conv_args, slot, shape), (other, g)


def _conv_transpose_bwd(conv_args, slot, shape, residuals, c):
  # <c, transpose(g)> = <conv with c in slot `slot`, g>: its gradient in g is that conv, and in
  # `other` it is the transpose in other's slot, applied to g.
  other, g = residuals
  d_g = _conv(c, other, conv_args) if slot == 0 else _conv(other, c, conv_args)
  return _conv_transpose(c, g, conv_args, 1 - slot, other.shape), d_g


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` (same arguments and values) with fast higher-order derivatives.

  Pass it to `nn.Conv(..., conv_general_dilated=conv_general_dilated)`; see the note above.
  """
  if not isinstance(padding, str):
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  as_tuple = lambda t: None if t is None else tuple(t)  # noqa: E731
  conv_args = (tuple(window_strides), padding, as_tuple(lhs_dilation), as_tuple(rhs_dilation),
               dimension_numbers, feature_group_count, precision)
  return _conv(lhs, rhs, conv_args)
