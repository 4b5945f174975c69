"""The GAN references: MLP and DCGAN generators and projection discriminators, their losses, the
WGAN-GP penalty and the eager train step (n_critic D updates, one G update, EMA)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from aigc_jax.bench.torch_reference.common import adam
from aigc_jax.bench.torch_reference.common import ema_update
from aigc_jax.bench.torch_reference.common import preprocess
from aigc_jax.bench.torch_reference.common import spectral_norm_if
from aigc_jax.bench.torch_reference.common import upsample
from aigc_jax.families import gan as gan_family


def _condition_z(embed: nn.Embedding | None, z, label, label_mode: str):
  """z, or z with a learned label embedding: multiplied or concatenated (models/gan.py's modes)."""
  if embed is None:
    return z
  return z * embed(label) if label_mode == "multiply" else torch.cat([z, embed(label)], -1)


def _g_input_width(z_dim: int, num_classes: int, label_mode: str) -> int:
  return 2 * z_dim if num_classes and label_mode == "concat" else z_dim


class ProjectionHead(nn.Module):
  """logit = psi(h) (+ <embed(y), h> when conditional): the projection discriminator's head."""

  def __init__(self, features: int, num_classes: int, sn: bool):
    super().__init__()
    self.logit = spectral_norm_if(nn.Linear(features, 1), sn)
    self.embed = spectral_norm_if(nn.Embedding(num_classes, features), sn) if num_classes else None

  def forward(self, h, label):
    logit = self.logit(h)[:, 0]
    return logit if self.embed is None else logit + (self.embed(label) * h).sum(-1)


class MLPGenerator(nn.Module):
  """PyTorch-GAN's gan.py generator: 256, 512 + BN(eps 0.8), 1024 + BN(eps 0.8), tanh output."""

  def __init__(self, image_shape, z_dim: int, num_classes: int, label_mode: str = "multiply",
               hidden=(256, 512, 1024)):
    super().__init__()
    self.image_shape, self.label_mode = tuple(image_shape), label_mode
    self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
    layers, width = [], _g_input_width(z_dim, num_classes, label_mode)
    for i, out in enumerate(hidden):
      layers.append(nn.Linear(width, out))
      if i > 0:
        layers.append(nn.BatchNorm1d(out, 0.8))
      layers.append(nn.LeakyReLU(0.2))
      width = out
    layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
    self.net = nn.Sequential(*layers)

  def forward(self, z, label=None):
    h, w, c = self.image_shape
    return self.net(_condition_z(self.embed, z, label, self.label_mode)).view(-1, c, h, w)


class MLPDiscriminator(nn.Module):
  """flatten -> 512 -> 256 (LeakyReLU 0.2) -> projection head."""

  def __init__(self, image_shape, num_classes: int, sn: bool, hidden=(512, 256)):
    super().__init__()
    layers, width = [nn.Flatten()], math.prod(image_shape)
    for out in hidden:
      layers += [spectral_norm_if(nn.Linear(width, out), sn), nn.LeakyReLU(0.2)]
      width = out
    self.net = nn.Sequential(*layers)
    self.head = ProjectionHead(width, num_classes, sn)

  def forward(self, x, label=None):
    return self.head(self.net(x), label)


class DCGANGenerator(nn.Module):
  """z -> Linear to (F, H/4, W/4) -> BN, ReLU -> 2x up to F/2 -> BN, ReLU -> 2x up -> tanh.

  With `final_features` the last upsampling outputs that many channels, then BN, ReLU and a
  3x3 conv to the image channels (the JAX generator's `final_features`)."""

  def __init__(self, image_shape, z_dim: int, num_classes: int, upsample_mode: str,
               label_mode: str = "multiply", features: int = 128, final_features: int = 0):
    super().__init__()
    h, w, c = image_shape
    self.start, self.label_mode = (features, h // 4, w // 4), label_mode
    self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
    self.dense = nn.Linear(_g_input_width(z_dim, num_classes, label_mode), math.prod(self.start))
    if final_features:
      last = [
          upsample(upsample_mode, features // 2, final_features),
          nn.BatchNorm2d(final_features),
          nn.ReLU(),
          nn.Conv2d(final_features, c, 3, padding=1)
      ]
    else:
      last = [upsample(upsample_mode, features // 2, c)]
    self.net = nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(),
                             upsample(upsample_mode, features, features // 2),
                             nn.BatchNorm2d(features // 2), nn.ReLU(), *last, nn.Tanh())

  def forward(self, z, label=None):
    z = _condition_z(self.embed, z, label, self.label_mode)
    return self.net(self.dense(z).view(-1, *self.start))


class DCGANDiscriminator(nn.Module):
  """Conv 4x4 s2 (F) -> LeakyReLU -> Conv 4x4 s2 (2F) [-> BN] -> LeakyReLU -> projection head."""

  def __init__(self, image_shape, num_classes: int, sn: bool, features: int = 64,
               batch_norm: bool = True):
    super().__init__()
    h, w, c = image_shape
    layers = [
        spectral_norm_if(nn.Conv2d(c, features, 4, 2, 1), sn),
        nn.LeakyReLU(0.2),
        spectral_norm_if(nn.Conv2d(features, 2 * features, 4, 2, 1), sn)
    ]
    if batch_norm and not sn:
      layers.append(nn.BatchNorm2d(2 * features))
    self.net = nn.Sequential(*layers, nn.LeakyReLU(0.2), nn.Flatten())
    self.head = ProjectionHead(2 * features * (h // 4) * (w // 4), num_classes, sn)

  def forward(self, x, label=None):
    return self.head(self.net(x), label)


# name -> (d_loss(real_logits, fake_logits), g_loss(fake_logits)), as gan_losses.LOSSES
GAN_LOSSES = {
    "non_saturating": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                       lambda f: F.softplus(-f).mean()),
    "minimax": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                lambda f: -F.softplus(f).mean()),
    "hinge": (lambda r, f: F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean(), lambda f: -f.mean()),
    "wasserstein": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
}


def gradient_penalty(critic, real, fake, label):
  """WGAN-GP: mean of (||grad critic(x_hat)|| - 1)^2 at random interpolates x_hat."""
  eps = torch.rand(real.shape[0], 1, 1, 1)
  x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
  grads, = torch.autograd.grad(critic(x_hat, label).sum(), x_hat, create_graph=True)
  norms = torch.sqrt(grads.flatten(1).square().sum(1) + 1e-12)
  return (norms - 1.0).square().mean()


class GANReference:
  """A GAN's modules, optimizers and eager train step: n_critic D updates, one G update, EMA."""

  def __init__(self, config, info):
    """`config`: a GAN's that `torch_reference.unsupported` accepts; `info`: its dataset's."""
    num_classes = gan_family.num_labels(config, info)  # labels or pixel clusters, as in JAX
    shape, z_dim, sn = info.image_shape, config.latent_dim, config.spectral_norm
    if config.model == "gan_mlp":
      self.g = MLPGenerator(shape, z_dim, num_classes, config.label_mode)
      self.d = MLPDiscriminator(shape, num_classes, sn)
    else:
      self.g = DCGANGenerator(shape, z_dim, num_classes, config.upsample, config.label_mode,
                              features=config.g_base_features,
                              final_features=config.g_final_features)
      self.d = DCGANDiscriminator(shape, num_classes, sn, features=config.d_base_features,
                                  batch_norm=config.d_batchnorm)
    self.ema = copy.deepcopy(self.g).requires_grad_(False)
    d_lr = config.d_learning_rate if config.d_learning_rate > 0 else config.learning_rate
    self.g_opt = adam(self.g.parameters(), config, config.learning_rate)
    self.d_opt = adam(self.d.parameters(), config, d_lr)
    self.d_loss, self.g_loss = GAN_LOSSES[config.gan_loss]
    self.config, self.num_classes = config, num_classes
    self.modules = (self.g, self.d)

  def compile(self) -> None:
    """`torch.compile`s G's and D's forward in place (the optimizers and EMA stay eager); D stays
    eager under a gradient penalty, whose double backward torch.compile does not support."""
    self.g.compile()
    if not self.config.gp_weight:
      self.d.compile()

  def step(self, images, labels) -> float:
    """One train step on n_critic uint8 NCHW batches, one per D update; returns the D + G loss."""
    config = self.config
    reals = preprocess(images, config).chunk(config.n_critic)
    label_chunks = labels.chunk(config.n_critic) if self.num_classes else [None] * config.n_critic
    size = reals[0].shape[0]
    # As families/gan.py: with n_critic == 1 the D update trains on the fakes that G's update
    # then backpropagates through (the PyTorch DCGAN example's step); otherwise fresh noise.
    fake_g = self.g(torch.randn(size, config.latent_dim), label_chunks[-1])
    for real, label in zip(reals, label_chunks):
      if config.n_critic == 1:
        fake = fake_g.detach()
      else:
        with torch.no_grad():
          fake = self.g(torch.randn(size, config.latent_dim), label)
      d_loss = self.d_loss(self.d(real, label), self.d(fake, label))
      loss = d_loss
      if config.gp_weight:
        loss = loss + config.gp_weight * gradient_penalty(self.d, real, fake, label)
      self.d_opt.zero_grad()
      loss.backward()
      self.d_opt.step()
    self.d.requires_grad_(False)  # G's step needs gradients w.r.t. G's weights only
    g_loss = self.g_loss(self.d(fake_g, label_chunks[-1]))
    self.g_opt.zero_grad()
    g_loss.backward()
    self.g_opt.step()
    self.d.requires_grad_(True)
    ema_update(self.ema, self.g, config.ema_decay)
    return d_loss.item() + g_loss.item()
