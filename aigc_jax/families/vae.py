"""The VAE family: MLP and conv VAEs, beta weight, class-conditional, IWAE training bound.

Units: every reported number is in nats per image, summed over pixels and channels (Bernoulli
likelihood of [0, 1] intensities, Gaussian with a learned global scale, or a per-pixel logistic
discretized to the 256 intensity levels: a discrete likelihood, as in PixelCNN++).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import eval_split
from aigc_jax import likelihoods
from aigc_jax import state as state_lib
from aigc_jax import writers
from aigc_jax.families import Trainable
from aigc_jax.families import dataset_labels
from aigc_jax.families import eval_params
from aigc_jax.families import one_batch_per_step
from aigc_jax.families import single_player_step
from aigc_jax.models import vae as vae_models
from aigc_jax.state import EVAL_STREAM
from aigc_jax.state import IWAE_STREAM
from aigc_jax.state import SAMPLE_STREAM
from aigc_jax.state import Player
from aigc_jax.state import TrainState
from aigc_jax.state import step_rng
from aigc_jax.state import stream_rng
from aigc_jax.suggest import unknown_choice_message


def default_config(model: str) -> dict:
  return dict(
      # Dense steps run fastest many per dispatch; 0 (auto): one on CPU, where convolutions in
      # loop bodies are slow, 100 elsewhere.
      steps_per_call=100 if model == "vae_mlp" else 0,
      latent_dim=20,
      hidden_dim=400,  # MLP: one hidden layer of this width; conv: the dense layer's width
      # The conv encoder's two stride-2 stages (64-pixel images get a third of twice the last
      # width: vae_models.conv_widths); the decoder's reversed.
      conv_features=(32, 64),
      conv_activation="relu",  # the conv VAE's nonlinearity: 'relu', 'silu' or 'elu'
      likelihood="bernoulli",  # 'gaussian' or 'discretized_logistic' (decoder: 2C channels)
      torch_init=False,  # MLP layers initialised like PyTorch's nn.Linear (U(+-1/sqrt(fan_in)))
      beta=1.0,  # weight of the KL term (beta-VAE); 1 = the ELBO
      ema_decay=0.0,  # > 0: evaluate and sample with a moving average of the parameters (warmed
      #                 up like the GANs' EMA generator); 0 = the trained parameters themselves
      conditional=False,  # labels into encoder and decoder
      iwae_samples=1,  # k > 1 trains on the k-sample IWAE bound instead of the ELBO
      eval_iwae_samples=1000,  # k of the importance-sampled NLL in `python -m aigc_jax.evaluate`
      eval_iwae_examples=1000,  # how many test images (the first ones) that NLL averages over
  )


def validate_config(config, need) -> None:
  need(config.likelihood in vae_models.LIKELIHOODS,
       unknown_choice_message("likelihood", config.likelihood, vae_models.LIKELIHOODS))
  need(not (config.likelihood == "bernoulli" and config.scale != "zero_one"),
       "likelihood='bernoulli' needs scale='zero_one' (pixels in [0, 1])")
  need(config.latent_dim > 0 and config.hidden_dim > 0, "latent_dim and hidden_dim must be > 0")
  need(0.0 <= config.ema_decay < 1.0,
       f"ema_decay must be in [0, 1) (0 = off), got {config.ema_decay}")
  need(
      config.conv_activation in vae_models.ACTIVATIONS,
      f"conv_activation '{config.conv_activation}' is unknown; choose one of "
      f"{sorted(vae_models.ACTIVATIONS)}")
  need(
      len(config.conv_features) == 2 and min(config.conv_features) > 0,
      "conv_features must be two positive widths (the encoder's two stride-2 stages, which the "
      f"decoder runs in reverse), got {tuple(config.conv_features)}")
  need(config.beta > 0, f"beta must be > 0, got {config.beta}")
  need(config.iwae_samples >= 1, f"iwae_samples must be >= 1, got {config.iwae_samples}")
  need(config.iwae_samples == 1 or config.beta == 1.0,
       "beta != 1 only applies to the ELBO; set iwae_samples=1 or beta=1")
  need(config.eval_iwae_samples >= 1 and config.eval_iwae_examples >= 1,
       "eval_iwae_samples and eval_iwae_examples must be >= 1")


def build_model(config, info: data_lib.DatasetInfo) -> vae_models.VAE:
  num_classes = info.num_classes if config.conditional else 0
  dtype = backend.compute_dtype(config)
  out_shape = vae_models.decoder_shape(info.image_shape, config.likelihood)
  if config.model == "vae_mlp":
    encoder = vae_models.MLPEncoder((config.hidden_dim,), config.latent_dim, num_classes,
                                    config.torch_init, dtype)
    decoder = vae_models.MLPDecoder(out_shape, (config.hidden_dim,), num_classes, config.torch_init,
                                    dtype)
  else:
    features = vae_models.conv_widths(config.conv_features, info.image_shape)  # 3 at side 64
    encoder = vae_models.ConvEncoder(features, config.hidden_dim, config.latent_dim, num_classes,
                                     config.conv_activation, dtype)
    decoder = vae_models.ConvDecoder(out_shape, features[::-1], config.hidden_dim, num_classes,
                                     config.conv_activation, dtype)
  return vae_models.VAE(encoder, decoder, config.likelihood)


def _log_likelihood(params, likelihood: str, scale: str, out, x):
  """log p(x | decoder output `out`) per example, in nats; x on the config's `scale`."""
  if likelihood == "bernoulli":
    return likelihoods.bernoulli_log_likelihood(out, x)
  if likelihood == "gaussian":
    return likelihoods.gaussian_log_likelihood(out, params["params"]["log_scale"], x)
  mean, log_scale = jnp.split(out, 2, axis=-1)  # location in [0, 1] units, whatever the scale
  x01 = (x + 1.0) / 2.0 if scale == "minus_one_one" else x
  return likelihoods.discretized_logistic_log_likelihood(mean, log_scale, x01)


def mean_image(likelihood: str, scale: str, out):
  """The decoder's expected image in [0, 1] for display (the logistic's location, clipped)."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(out)
  if likelihood == "discretized_logistic":
    return jnp.clip(jnp.split(out, 2, axis=-1)[0], 0.0, 1.0)
  return jnp.clip((out + 1.0) / 2.0 if scale == "minus_one_one" else out, 0.0, 1.0)


PROGRAM_KEYS = ()  # every float key enters the step as a value
batches_per_step = one_batch_per_step
train_labels = dataset_labels  # read by conditional models only


class Net(NamedTuple):
  """The VAE and the static choices its functions are traced with (hashable: a jit static)."""

  model: vae_models.VAE
  likelihood: str
  scale: str
  conditional: bool
  latent_dim: int

  def labels(self, batch):
    return batch["label"] if self.conditional else None


def build(config, info: data_lib.DatasetInfo, total_steps: int = 1) -> Trainable:
  """The VAE `Trainable`; `total_steps` shapes the learning-rate schedule (if any)."""
  net = Net(build_model(config, info), config.likelihood, config.scale, bool(config.conditional),
            config.latent_dim)
  tx = state_lib.adam(config, total_steps)
  num_classes = info.num_classes if net.conditional else 0
  return Trainable(
      init=functools.partial(init, net=net, tx=tx, info=info, config=config),
      train_step=functools.partial(train_step, net=net, config=config), evaluate=functools.partial(
          evaluate, net=net,
          config=config), full_evaluate=functools.partial(full_evaluate, net=net, config=config),
      sample=functools.partial(sample, net=net, num_classes=num_classes),
      log_images=functools.partial(log_images, net=net, config=config, num_classes=num_classes),
      best_metric="neg_elbo", best_mode="min", optimizers=(("vae", tx),))


def init(rng, *, net: Net, tx, info: data_lib.DatasetInfo, config) -> TrainState:
  """The VAE's params from `rng` (folds 0 and 1) with its optimizer; EMA = params when kept."""
  x = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  label = jnp.zeros((1,), jnp.int32) if net.conditional else None
  params = net.model.init(jax.random.fold_in(rng, 0), x, jax.random.fold_in(rng, 1), label)
  return TrainState.create(rng, ema_params=params if config.ema_decay > 0 else None,
                           vae=Player.create(params, tx))


def per_example_terms(net: Net, params, batch, rng, num_samples: int, axis_name=None):
  """(log p(x|z) (S, B), KL (B,), (z, mean, logvar)) of `num_samples` posterior samples."""
  x = batch["image"]
  out, mean, logvar, z = net.model.apply(params, x, rng, net.labels(batch), num_samples, axis_name)
  log_lik = _log_likelihood(params, net.likelihood, net.scale, out, x)  # (S, B)
  return log_lik, likelihoods.gaussian_kl(mean, logvar), (z, mean, logvar)


def loss_fn(params, batch, rng, *, net: Net, config, axis_name=None):
  """The training loss (beta-ELBO, or the IWAE bound with iwae_samples k > 1) and metrics."""
  k = config.iwae_samples
  log_lik, kl, (z, mean, logvar) = per_example_terms(net, params, batch, rng, k, axis_name)
  neg_elbo = -log_lik.mean(0) + kl
  if k == 1:
    loss = jnp.mean(-log_lik[0] + config.beta * kl)
  else:
    loss = -jnp.mean(likelihoods.iwae_bound(log_lik, z, mean, logvar))
  return loss, {
      "loss": loss, "neg_elbo": jnp.mean(neg_elbo), "recon": -jnp.mean(log_lik), "kl": jnp.mean(kl)
  }


def train_step(state: TrainState, batch, *, net: Net, config, axis_name: str | None = None):
  """One Adam step on the loss of `batch` (images on the config's scale), and the EMA's."""
  objective = functools.partial(loss_fn, batch=batch, rng=step_rng(state), net=net, config=config,
                                axis_name=axis_name)
  return single_player_step(state, "vae", objective, config.ema_decay, axis_name)


@functools.partial(jax.jit, static_argnames="net")
def eval_sums(params, batch, rng, net: Net):
  log_lik, kl, _ = per_example_terms(net, params, batch, rng, 1)
  m = batch["mask"]
  return {
      "neg_elbo": jnp.sum(m * (kl - log_lik[0])), "recon": jnp.sum(m * -log_lik[0]),
      "kl": jnp.sum(m * kl), "count": jnp.sum(m)
  }


def evaluate(state: TrainState, test: data_lib.DeviceData, *, net: Net, config) -> dict:
  """One-sample ELBO terms over the whole split, with fixed noise (the same at every eval); with
  several processes, each evaluates its rows (`eval_split`)."""
  rng, params = stream_rng(state, EVAL_STREAM), eval_params(state, "vae")
  totals = eval_split.totals(
      test, config.eval_batch_size, config.scale,
      lambda i, batch: eval_sums(params, batch, jax.random.fold_in(rng, i), net),
      ("neg_elbo", "recon", "kl", "count"))
  count = totals.pop("count")
  return {k: v / count for k, v in totals.items()}


@functools.partial(jax.jit, static_argnames=("net", "num_samples"))
def iwae_chunk(params, batch, rng, net: Net, num_samples: int):
  """Per image: the k-sample bound and the k-sample mean ELBO (same samples, so bound >= ELBO)."""
  log_lik, _, (z, mean, logvar) = per_example_terms(net, params, batch, rng, num_samples)
  log_w = likelihoods.importance_log_weights(log_lik, z, mean, logvar)
  return likelihoods.iwae_bound_from_log_weights(log_w), jnp.mean(log_w, axis=0)


def full_evaluate(state: TrainState, test: data_lib.DeviceData, *, net: Net, config,
                  iwae_samples=None, iwae_examples=None, progress=None) -> dict:
  """The periodic metrics as test_*, plus nll_iwae: -log p(x) by k-sample importance sampling."""
  k = iwae_samples or config.eval_iwae_samples
  n = min(iwae_examples or config.eval_iwae_examples, int(test.labels.shape[0]))
  result = {
      f"test_{name}": value
      for name, value in evaluate(state, test, net=net, config=config).items()
  }
  subset = data_lib.DeviceData(test.images[:n], test.labels[:n])
  chunk = max(1, min(n, 10_000 // k))  # about 10k decoder evaluations per call
  rng = stream_rng(state, IWAE_STREAM)
  bound_sum, elbo_sum = 0.0, 0.0
  batches = list(eval_split.batches(subset, chunk, scale=config.scale))
  for i, batch in progress(batches) if progress else batches:
    bound, elbo = iwae_chunk(eval_params(state, "vae"), batch, jax.random.fold_in(rng, i), net, k)
    bound_sum += float(jnp.sum(bound * batch["mask"]))
    elbo_sum += float(jnp.sum(elbo * batch["mask"]))
  result.update(nll_iwae=-bound_sum / n, nll_iwae_samples=k, nll_iwae_examples=n,
                nll_iwae_subset_neg_elbo=-elbo_sum / n)
  return result


@functools.partial(jax.jit, static_argnames=("net", "num"))
def decode_prior(params, rng, labels, net: Net, num: int):
  """`num` mean images in [0, 1] decoded from prior samples z ~ N(0, I)."""
  z = jax.random.normal(rng, (num, net.latent_dim))
  out = net.model.apply(params, z, labels, method=vae_models.VAE.decode)
  return mean_image(net.likelihood, net.scale, out)


def sample(state: TrainState, rng, num: int, *, net: Net, num_classes: int):
  """(num images in [0, 1], their labels (class i % num_classes) or None)."""
  labels = jnp.arange(num, dtype=jnp.int32) % num_classes if net.conditional else None
  images = np.asarray(decode_prior(eval_params(state, "vae"), rng, labels, num=num, net=net))
  return images, (None if labels is None else np.asarray(labels))


@functools.partial(jax.jit, static_argnames="net")
def reconstruct(params, batch, rng, net: Net):
  out, *_ = net.model.apply(params, batch["image"], rng, net.labels(batch))
  return mean_image(net.likelihood, net.scale, out[0])


def log_images(state: TrainState, test: data_lib.DeviceData, *, net: Net, config,
               num_classes: int) -> dict:
  """A sample grid (class per row when conditional) and test originals over reconstructions."""
  rng = stream_rng(state, SAMPLE_STREAM)  # the same noise at every step
  samples, ncols = writers.sample_grid(
      lambda num: sample(state, rng, num, net=net, num_classes=num_classes),
      config.num_sample_images, num_classes)
  _, batch = next(eval_split.batches(test, 32, scale=config.scale))
  recon = np.asarray(reconstruct(eval_params(state, "vae"), batch, rng, net))
  originals = np.asarray(batch["image"])
  if config.scale == "minus_one_one":
    originals = (originals + 1.0) / 2.0
  pairs = np.concatenate([originals[:16], recon[:16], originals[16:], recon[16:]])
  return {"samples": (samples, ncols), "reconstructions": (pairs, 16)}
