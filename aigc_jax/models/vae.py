"""VAE encoders and decoders (MLP and convolutional), optionally class-conditional.

The encoder maps an image (and a label) to the mean and log-variance of a diagonal Gaussian
q(z|x); the decoder maps a latent (and a label) to the parameters of p(x|z) per pixel and
channel: logits (Bernoulli likelihood), means (Gaussian, with a learned global log-scale kept in
the `VAE` module), or means then log-scales along the channel axis (discretized logistic). Its
output has `LIKELIHOODS[likelihood] * C` channels for C image channels (`decoder_shape`).

`dtype` is the computation's (float32 or bfloat16): parameters stay float32, and the encoder's
mean and log-variance and the decoder's output come out in float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import SubPixelUpsample
from aigc_jax.models.layers import init_kwargs
from aigc_jax.models.layers import resolution_stages
from aigc_jax.noise import batch_noise


def _dense(features: int, fan_in: int, torch_init: bool, name=None, dtype=jnp.float32) -> nn.Dense:
  return nn.Dense(features, name=name, dtype=dtype, **init_kwargs(torch_init, fan_in))


def _f32(*arrays):
  return tuple(a.astype(jnp.float32) for a in arrays)


def _with_label(h: jnp.ndarray, label, num_classes: int) -> jnp.ndarray:
  if not num_classes:
    return h
  return jnp.concatenate([h, jax.nn.one_hot(label, num_classes, dtype=h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
  hidden_dims: Sequence[int] = (400,)
  latent_dim: int = 20
  num_classes: int = 0  # > 0: conditional on a label
  torch_init: bool = False  # PyTorch nn.Linear initialisation, to match a PyTorch reference
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, label=None):
    h = _with_label(x.reshape(x.shape[0], -1), label, self.num_classes)
    for width in self.hidden_dims:
      h = nn.relu(_dense(width, h.shape[-1], self.torch_init, dtype=self.dtype)(h))
    fan_in = h.shape[-1]
    return _f32(
        _dense(self.latent_dim, fan_in, self.torch_init, "mean", self.dtype)(h),
        _dense(self.latent_dim, fan_in, self.torch_init, "logvar", self.dtype)(h))


class MLPDecoder(nn.Module):
  image_shape: Sequence[int] = (28, 28, 1)
  hidden_dims: Sequence[int] = (400,)
  num_classes: int = 0
  torch_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, label=None):
    h = _with_label(z, label, self.num_classes)
    for width in self.hidden_dims:
      h = nn.relu(_dense(width, h.shape[-1], self.torch_init, dtype=self.dtype)(h))
    out = _dense(math.prod(self.image_shape), h.shape[-1], self.torch_init, dtype=self.dtype)(h)
    return out.astype(jnp.float32).reshape(z.shape[:-1] + tuple(self.image_shape))


ACTIVATIONS = {"relu": nn.relu, "silu": nn.silu, "elu": nn.elu}
# likelihood -> decoder outputs per image channel
LIKELIHOODS = {"bernoulli": 1, "gaussian": 1, "discretized_logistic": 2}


def decoder_shape(image_shape: Sequence[int], likelihood: str) -> tuple[int, int, int]:
  """(H, W, C * LIKELIHOODS[likelihood]): the decoder's output for (H, W, C) images."""
  height, width, channels = image_shape
  return height, width, channels * LIKELIHOODS[likelihood]


class ConvEncoder(nn.Module):
  """A stride-2 4x4 convolution per width in `features` (two: H -> H/2 -> H/4), a 3x3 one at the
  lowest resolution, a dense layer, two heads. (`conv_widths` gives 64-pixel images three.)"""

  features: Sequence[int] = (32, 64)
  hidden_dim: int = 256
  latent_dim: int = 20
  num_classes: int = 0
  activation: str = "relu"  # a key of ACTIVATIONS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, label=None):
    act, dtype = ACTIVATIONS[self.activation], self.dtype
    h = x
    for f in self.features:
      h = act(nn.Conv(f, (4, 4), strides=(2, 2), padding="SAME", dtype=dtype)(h))
    h = act(nn.Conv(self.features[-1], (3, 3), padding="SAME", dtype=dtype)(h))  # cheap there
    h = _with_label(h.reshape(h.shape[0], -1), label, self.num_classes)
    h = act(nn.Dense(self.hidden_dim, dtype=dtype)(h))
    return _f32(
        nn.Dense(self.latent_dim, name="mean", dtype=dtype)(h),
        nn.Dense(self.latent_dim, name="logvar", dtype=dtype)(h))


class ConvDecoder(nn.Module):
  """Dense to (H/2^n, W/2^n, features[0]) for n = len(features) (two: H/4), a 3x3 conv there,
  then n sub-pixel 2x upsamplings, to features[1], ..., and to C last.

  Takes z of shape (N, D); returns (N, H, W, C) for image_shape (H, W, C) (the decoder's output
  shape: see `decoder_shape`).
  """

  image_shape: Sequence[int] = (28, 28, 1)
  features: Sequence[int] = (64, 32)
  hidden_dim: int = 256
  num_classes: int = 0
  activation: str = "relu"  # a key of ACTIVATIONS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, label=None):
    height, width, channels = self.image_shape
    factor = 2**len(self.features)
    if height % factor or width % factor:
      raise ValueError(f"ConvDecoder's {len(self.features)} upsamplings need image sides "
                       f"divisible by {factor}, got {self.image_shape}")
    act, dtype = ACTIVATIONS[self.activation], self.dtype
    h = _with_label(z, label, self.num_classes)
    h = act(nn.Dense(self.hidden_dim, dtype=dtype)(h))
    h = act(nn.Dense(height // factor * width // factor * self.features[0], dtype=dtype)(h))
    h = h.reshape(-1, height // factor, width // factor, self.features[0])
    h = act(nn.Conv(self.features[0], (3, 3), padding="SAME", dtype=dtype)(h))
    for f in self.features[1:]:
      h = act(SubPixelUpsample(f, dtype=dtype)(h))
    return SubPixelUpsample(channels, dtype=dtype)(h).astype(jnp.float32)


def conv_widths(features: Sequence[int], image_shape: Sequence[int]) -> tuple[int, ...]:
  """The conv encoder's stage widths for (H, W, C) images from the config's two `features`:
  those at sides 28 and 32; at side 64 a third stage of twice the last width (the decoder runs
  them reversed). Other sides raise ValueError (`layers.IMAGE_SIDES`)."""
  extra = resolution_stages(image_shape, "the conv VAE") - len(features)
  return tuple(features) + tuple(features[-1] * 2**(i + 1) for i in range(extra))


class VAE(nn.Module):
  """q(z|x) and p(x|z) with a standard normal prior; `__call__` draws `num_samples` latents."""

  encoder: nn.Module
  decoder: nn.Module
  likelihood: str = "bernoulli"  # a key of LIKELIHOODS

  def setup(self):
    if self.likelihood == "gaussian":
      self.log_scale = self.param("log_scale", nn.initializers.zeros, ())

  def encode(self, x, label=None):
    return self.encoder(x, label)

  def decode(self, z, label=None):
    """The likelihood's parameters, (N, H, W, LIKELIHOODS[likelihood] * C) for z (N, D)."""
    return self.decoder(z, label)

  def __call__(self, x, rng, label=None, num_samples: int = 1, axis_name: str | None = None):
    """Returns (decoder output (S, B, H, W, C'), mean, logvar, z (S, B, D)); C' as in `decode`.

    Under a data axis `axis_name` the noise is that of the global batch, sliced (`batch_noise`).
    """
    mean, logvar = self.encode(x, label)
    eps = batch_noise(lambda key, shape: jax.random.normal(key, shape, mean.dtype), rng,
                      (num_samples,) + mean.shape, axis_name, batch_axis=1)
    z = mean + jnp.exp(0.5 * logvar) * eps
    flat_z = z.reshape(-1, z.shape[-1])
    flat_label = None if label is None else jnp.tile(label, num_samples)
    out = self.decode(flat_z, flat_label)
    return out.reshape((num_samples, x.shape[0]) + out.shape[1:]), mean, logvar, z
