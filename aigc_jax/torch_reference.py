"""PyTorch eager references of the project's models and train steps, for `aigc_jax.benchmark`.

The same architectures as models/gan.py and models/vae.py (layers, widths, BatchNorm settings,
spectral normalization, label embedding and projection discriminator), the same optimizers,
losses, `n_critic` and gradient penalty as families/gan.py and families/vae.py, and an EMA
generator, written as a PyTorch user would: NCHW tensors, nn.Modules, torch.optim.Adam, one
eager step per call. The weights are PyTorch's own initialisation (timing does not depend on it).

Only the options the experiments use are reproduced; others raise `NotImplementedError`.
Import this module only where PyTorch is wanted: it is the project's one torch import.
"""

from __future__ import annotations

import copy
import math

try:
  import torch
  import torch.nn.functional as F
  from torch import nn
  from torch.nn.utils.parametrizations import spectral_norm
except ImportError as e:  # pragma: no cover - depends on the environment
  raise ImportError("PyTorch is missing: install the bench extra: pip install -e '.[bench]'") from e

from aigc_jax.families import gan as gan_family


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
  return spectral_norm(module) if enabled else module


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
    self.logit = _sn(nn.Linear(features, 1), sn)
    self.embed = _sn(nn.Embedding(num_classes, features), sn) if num_classes else None

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
      layers += [_sn(nn.Linear(width, out), sn), nn.LeakyReLU(0.2)]
      width = out
    self.net = nn.Sequential(*layers)
    self.head = ProjectionHead(width, num_classes, sn)

  def forward(self, x, label=None):
    return self.head(self.net(x), label)


def upsample(mode: str, in_channels: int, out_channels: int) -> nn.Module:
  """2x upsampling as a PyTorch user writes it, per `gan_models.UPSAMPLE_MODES`: 'subpixel' (3x3
  conv to 4x the channels, pixel shuffle), 'resize_conv' (nearest, 3x3 conv) or 'transpose'
  (ConvTranspose2d 4x4 stride 2, which the JAX side computes as `layers.TransposeUpsample`)."""
  if mode == "subpixel":
    return nn.Sequential(nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1), nn.PixelShuffle(2))
  if mode == "resize_conv":
    return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(in_channels, out_channels, 3, padding=1))
  return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)


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
      last = [upsample(upsample_mode, features // 2, final_features),
              nn.BatchNorm2d(final_features), nn.ReLU(), nn.Conv2d(final_features, c, 3, padding=1)]
    else:
      last = [upsample(upsample_mode, features // 2, c)]
    self.net = nn.Sequential(
        nn.BatchNorm2d(features), nn.ReLU(),
        upsample(upsample_mode, features, features // 2), nn.BatchNorm2d(features // 2), nn.ReLU(),
        *last, nn.Tanh())

  def forward(self, z, label=None):
    z = _condition_z(self.embed, z, label, self.label_mode)
    return self.net(self.dense(z).view(-1, *self.start))


class DCGANDiscriminator(nn.Module):
  """Conv 4x4 s2 (F) -> LeakyReLU -> Conv 4x4 s2 (2F) [-> BN] -> LeakyReLU -> projection head."""

  def __init__(self, image_shape, num_classes: int, sn: bool, features: int = 64,
               batch_norm: bool = True):
    super().__init__()
    h, w, c = image_shape
    layers = [_sn(nn.Conv2d(c, features, 4, 2, 1), sn), nn.LeakyReLU(0.2),
              _sn(nn.Conv2d(features, 2 * features, 4, 2, 1), sn)]
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


def _preprocess(images, config):
  """uint8 NCHW -> float in [0, 1] or [-1, 1] (dynamically binarized if the config says so)."""
  x = images.float()
  if config.scale == "minus_one_one":
    return x / 127.5 - 1.0
  x = x / 255.0
  return torch.bernoulli(x) if config.binarize else x


def _adam(params, config, lr: float):
  return torch.optim.Adam(params, lr=lr, betas=(config.adam_b1, config.adam_b2))


class GANReference:
  """A GAN's modules, optimizers and eager train step: n_critic D updates, one G update, EMA."""

  def __init__(self, config, info):
    if (config.aux_classifier or config.r1_gamma or config.cr_weight or config.g_topk < 1 or
        gan_family.uses_rotation(config)):
      raise NotImplementedError("the PyTorch reference covers the experiments' GANs: no "
                                "aux_classifier, r1_gamma, cr_weight, g_topk or rotation loss")
    num_classes = gan_family.num_labels(config, info)  # labels or pixel clusters, as in JAX
    shape, z_dim, sn = info.image_shape, config.latent_dim, config.spectral_norm
    if config.model == "gan_mlp":
      self.g = MLPGenerator(shape, z_dim, num_classes, config.label_mode)
      self.d = MLPDiscriminator(shape, num_classes, sn)
    else:
      self.g = DCGANGenerator(shape, z_dim, num_classes, config.upsample, config.label_mode,
                              final_features=config.g_final_features)
      self.d = DCGANDiscriminator(shape, num_classes, sn, features=config.d_base_features,
                                  batch_norm=config.d_batchnorm)
    self.ema = copy.deepcopy(self.g).requires_grad_(False)
    d_lr = config.d_learning_rate if config.d_learning_rate > 0 else config.learning_rate
    self.g_opt = _adam(self.g.parameters(), config, config.learning_rate)
    self.d_opt = _adam(self.d.parameters(), config, d_lr)
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
    reals = _preprocess(images, config).chunk(config.n_critic)
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
    with torch.no_grad():
      for ema, param in zip(self.ema.parameters(), self.g.parameters()):
        ema.lerp_(param, 1.0 - config.ema_decay)
    return d_loss.item() + g_loss.item()


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
    self.conv = nn.Sequential(nn.Conv2d(c, f0, 4, 2, 1), act(), nn.Conv2d(f0, f1, 4, 2, 1),
                              act(), nn.Conv2d(f1, f1, 3, padding=1), act(), nn.Flatten())
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


class VAEReference:
  """A VAE, its Adam (and cosine schedule), its parameter EMA if any, and the eager ELBO step."""

  def __init__(self, config, info, total_steps: int):
    if config.likelihood != "bernoulli" or config.iwae_samples != 1:
      raise NotImplementedError("the PyTorch reference covers the Bernoulli ELBO only")
    num_classes = info.num_classes if config.conditional else 0
    if config.model == "vae_mlp":
      self.vae = MLPVAE(info.image_shape, config.hidden_dim, config.latent_dim, num_classes)
    else:
      self.vae = ConvVAE(info.image_shape, tuple(config.conv_features), config.hidden_dim,
                         config.latent_dim, num_classes, config.conv_activation)
    self.opt = _adam(self.vae.parameters(), config, config.learning_rate)
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
    x = _preprocess(images, self.config)
    label = labels if self.config.conditional else None
    mean, logvar = self.vae.encode(x, label)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    logits = self.vae.decode(z, label)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (logvar.exp() + mean.square() - 1.0 - logvar).sum(1)
    loss = (recon + self.config.beta * kl).mean()
    self.opt.zero_grad()
    loss.backward()
    self.opt.step()
    if self.schedule is not None:
      self.schedule.step()
    if self.ema is not None:
      with torch.no_grad():
        for ema, param in zip(self.ema.parameters(), self.vae.parameters()):
          ema.lerp_(param, 1.0 - self.config.ema_decay)
    return loss.item()


def build(config, info, total_steps: int = 1):
  """The reference (`step(uint8 NCHW images, int64 labels) -> loss`, `modules`, `compile()`) of a
  config."""
  if config.model in ("gan_mlp", "dcgan"):
    return GANReference(config, info)
  if config.model in ("vae_mlp", "vae_conv"):
    return VAEReference(config, info, total_steps)
  raise NotImplementedError(f"no PyTorch reference for model '{config.model}'")


def count_params(reference) -> int:
  return sum(p.numel() for module in reference.modules for p in module.parameters())
