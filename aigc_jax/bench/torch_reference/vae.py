"""The VAE references: the MLP and conv VAEs of models/vae.py and the eager ELBO train step."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from aigc_jax.bench.torch_reference.common import adam
from aigc_jax.bench.torch_reference.common import ema_update
from aigc_jax.bench.torch_reference.common import preprocess
from aigc_jax.bench.torch_reference.common import upsample


class VAE(nn.Module):
  """What both VAEs share: one-hot labels concatenated to encoder and decoder inputs."""

  def __init__(self, image_shape, num_classes: int):
    super().__init__()
    self.image_shape, self.num_classes = tuple(image_shape), num_classes

  def with_label(self, h, label):
    return h if not self.num_classes else torch.cat([h, F.one_hot(label, self.num_classes)], -1)


class MLPVAE(VAE):
  """784 -> hidden (ReLU) -> mean, logvar; z -> hidden (ReLU) -> 784 logits."""

  def __init__(self, image_shape, hidden: int, latent: int, num_classes: int):
    super().__init__(image_shape, num_classes)
    pixels = math.prod(image_shape)
    self.encoder = nn.Sequential(nn.Linear(pixels + num_classes, hidden), nn.ReLU())
    self.mean, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
    self.decoder = nn.Sequential(nn.Linear(latent + num_classes, hidden), nn.ReLU(),
                                 nn.Linear(hidden, pixels))

  def encode(self, x, label):
    h = self.encoder(self.with_label(x.flatten(1), label))
    return self.mean(h), self.logvar(h)

  def decode(self, z, label):
    h, w, c = self.image_shape
    return self.decoder(self.with_label(z, label)).view(-1, c, h, w)


class ConvVAE(VAE):
  """models/vae.py's ConvEncoder / ConvDecoder: 4x4 s2 convs, a 3x3 conv at 7x7, sub-pixel up."""

  ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU}

  def __init__(self, image_shape, features, hidden: int, latent: int, num_classes: int,
               activation: str = "relu"):
    super().__init__(image_shape, num_classes)
    (h, w, c), (f0, f1) = image_shape, features
    act = self.ACTIVATIONS[activation]
    self.start = (f1, h // 4, w // 4)
    flat = math.prod(self.start)
    self.conv = nn.Sequential(nn.Conv2d(c, f0, 4, 2, 1), act(), nn.Conv2d(f0, f1, 4, 2, 1), act(),
                              nn.Conv2d(f1, f1, 3, padding=1), act(), nn.Flatten())
    self.encoder = nn.Sequential(nn.Linear(flat + num_classes, hidden), act())
    self.mean, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
    self.dense = nn.Sequential(nn.Linear(latent + num_classes, hidden), act(),
                               nn.Linear(hidden, flat), act())
    self.decoder = nn.Sequential(nn.Conv2d(f1, f1, 3, padding=1), act(),
                                 upsample("subpixel", f1, f0), act(), upsample("subpixel", f0, c))

  def encode(self, x, label):
    h = self.encoder(self.with_label(self.conv(x), label))
    return self.mean(h), self.logvar(h)

  def decode(self, z, label):
    return self.decoder(self.dense(self.with_label(z, label)).view(-1, *self.start))


def elbo_terms(vae: VAE, x, label):
  """(reconstruction nats, KL nats) per example, for one reparameterised z per example: the
  Bernoulli likelihood of the decoder's logits and the analytic KL to N(0, I)."""
  mean, logvar = vae.encode(x, label)
  z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
  recon = F.binary_cross_entropy_with_logits(vae.decode(z, label), x, reduction="none")
  return recon.flatten(1).sum(1), 0.5 * (logvar.exp() + mean.square() - 1.0 - logvar).sum(1)


class VAEReference:
  """A VAE, its Adam (and cosine schedule), its parameter EMA if any, and the eager ELBO step."""

  def __init__(self, config, info, total_steps: int):
    """`config`: a VAE's that `torch_reference.unsupported` accepts; `info`: its dataset's;
    `total_steps`: the cosine schedule's length."""
    num_classes = info.num_classes if config.conditional else 0
    if config.model == "vae_mlp":
      self.vae = MLPVAE(info.image_shape, config.hidden_dim, config.latent_dim, num_classes)
    else:
      self.vae = ConvVAE(info.image_shape, tuple(config.conv_features), config.hidden_dim,
                         config.latent_dim, num_classes, config.conv_activation)
    self.opt = adam(self.vae.parameters(), config, config.learning_rate)
    self.schedule = None
    if config.lr_schedule == "cosine":
      self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(1, total_steps))
    self.ema = copy.deepcopy(self.vae).requires_grad_(False) if config.ema_decay > 0 else None
    self.config = config
    self.modules = (self.vae,)

  def compile(self) -> None:
    """`torch.compile`s the VAE's encode and decode (the optimizer and EMA stay eager)."""
    self.vae.encode = torch.compile(self.vae.encode)
    self.vae.decode = torch.compile(self.vae.decode)

  def step(self, images, labels) -> float:
    """One train step on a uint8 NCHW batch; returns the loss (neg-ELBO with beta)."""
    recon, kl = elbo_terms(self.vae, preprocess(images, self.config),
                           labels if self.config.conditional else None)
    loss = (recon + self.config.beta * kl).mean()
    self.opt.zero_grad()
    loss.backward()
    self.opt.step()
    if self.schedule is not None:
      self.schedule.step()
    if self.ema is not None:
      ema_update(self.ema, self.vae, self.config.ema_decay)
    return loss.item()
