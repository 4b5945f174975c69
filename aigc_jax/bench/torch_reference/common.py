"""What the GAN and VAE references share: the torch import, layers and the optimizer."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def spectral_norm_if(module: nn.Module, enabled: bool) -> nn.Module:
  """`module` under spectral normalization when `enabled`, else `module` itself."""
  return spectral_norm(module) if enabled else module


def upsample(mode: str, in_channels: int, out_channels: int) -> nn.Module:
  """2x upsampling as a PyTorch user writes it, per `gan_models.UPSAMPLE_MODES`: 'subpixel' (3x3
  conv to 4x the channels, pixel shuffle), 'resize_conv' (nearest, 3x3 conv) or 'transpose'
  (ConvTranspose2d 4x4 stride 2, which the JAX side computes as `layers.TransposeUpsample`)."""
  if mode == "subpixel":
    return nn.Sequential(nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1), nn.PixelShuffle(2))
  if mode == "resize_conv":
    return nn.Sequential(nn.Upsample(scale_factor=2),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1))
  return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)


def preprocess(images, config):
  """uint8 NCHW -> float in [0, 1] or [-1, 1] (dynamically binarized if the config says so)."""
  x = images.float()
  if config.scale == "minus_one_one":
    return x / 127.5 - 1.0
  x = x / 255.0
  return torch.bernoulli(x) if config.binarize else x


def adam(params, config, lr: float):
  """torch.optim.Adam at `lr` with the config's adam_b1 and adam_b2."""
  return torch.optim.Adam(params, lr=lr, betas=(config.adam_b1, config.adam_b2))


def ema_update(ema: nn.Module, module: nn.Module, decay: float) -> None:
  """ema <- decay * ema + (1 - decay) * module, parameter by parameter, without gradients."""
  with torch.no_grad():
    for e, p in zip(ema.parameters(), module.parameters()):
      e.lerp_(p, 1.0 - decay)
