"""PyTorch eager references of the compared models' train steps, for the benchmark's --torch.

The same architectures as models/gan.py and models/vae.py (layers, widths, BatchNorm settings,
spectral normalization, label embedding and projection discriminator), the same optimizers,
losses, `n_critic` and gradient penalty as families/gan.py and families/vae.py, and an EMA
generator, written as a PyTorch user would: NCHW tensors, nn.Modules, torch.optim.Adam, one
eager step per call. The weights are PyTorch's own initialisation.

This module needs no torch: `MODELS` and `unsupported` say what is covered. `build` imports the
`gan` and `vae` submodules, the project's only torch imports.
"""

from __future__ import annotations

# The experiment presets whose train step a reference reproduces: the models the benchmark
# compares (its table's). A preset outside it (a new family's, say) needs no reference.
MODELS = ("cgan", "cvae", "dcgan", "gan_mlp", "sngan_hinge", "vae_conv", "vae_mlp", "wgan_gp")
GAN_MODELS = ("gan_mlp", "dcgan")  # the config.model values of the GAN references
VAE_MODELS = ("vae_mlp", "vae_conv")
MISSING_TORCH = "PyTorch is missing: install the bench extra: pip install -e '.[bench]'"


def unsupported(config) -> str | None:
  """Why no reference reproduces `config`'s train step (its model or an option the experiments
  do not use), or None when `build` supports it. Needs no torch."""
  if config.model in GAN_MODELS:
    from aigc_jax.families import gan as gan_family  # pylint: disable=g-import-not-at-top
    if (config.aux_classifier or config.r1_gamma or config.cr_weight or config.g_topk < 1 or
        config.mode_seeking_weight or gan_family.uses_rotation(config)):
      return ("the PyTorch reference covers the experiments' GANs: no aux_classifier, r1_gamma, "
              "cr_weight, g_topk, mode_seeking_weight or rotation loss")
    return None
  if config.model in VAE_MODELS:
    if config.likelihood != "bernoulli" or config.iwae_samples != 1:
      return "the PyTorch reference covers the Bernoulli ELBO only"
    return None
  return f"no PyTorch reference for model '{config.model}'"


def build(config, info, total_steps: int = 1):
  """The reference of a config: `step(uint8 NCHW images, int64 labels) -> loss`, `modules` (the
  trained nn.Modules), `ema` (the EMA copy or None) and `compile()`; made on torch's default
  device. Raises NotImplementedError where `unsupported(config)` names a reason, ImportError
  (MISSING_TORCH) without torch."""
  reason = unsupported(config)
  if reason:
    raise NotImplementedError(reason)
  try:
    from aigc_jax.bench.torch_reference import gan  # pylint: disable=g-import-not-at-top
    from aigc_jax.bench.torch_reference import vae  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    if e.name != "torch":
      raise
    raise ImportError(MISSING_TORCH) from e
  if config.model in GAN_MODELS:
    return gan.GANReference(config, info)
  return vae.VAEReference(config, info, total_steps)


def count_params(reference) -> int:
  """The number of parameters (elements) of the reference's trained modules, its EMA excluded."""
  return sum(p.numel() for module in reference.modules for p in module.parameters())
