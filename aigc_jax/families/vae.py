"""The VAE family: MLP and conv VAEs, beta weight, class-conditional, IWAE training bound.

Units: every reported number is in nats per image, summed over pixels (Bernoulli likelihood of
[0, 1] intensities, or Gaussian with a learned global scale).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import losses
from aigc_jax import writers
from aigc_jax.families import Trainable
from aigc_jax.models import vae as vae_models
from aigc_jax import state as state_lib
from aigc_jax.state import TrainState, step_rng

EVAL_STREAM = 1  # fold_in constants that keep eval and sampling noise apart from training noise
SAMPLE_STREAM = 2


def default_config(model: str) -> dict:
  return dict(
      # Dense steps run fastest many per dispatch; 0 (auto): one on CPU, where convolutions in
      # loop bodies are slow, 100 elsewhere.
      steps_per_call=100 if model == "vae_mlp" else 0,
      latent_dim=20,
      hidden_dim=400,  # MLP: one hidden layer of this width; conv: the dense layer's width
      conv_features=(32, 64),  # conv encoder channels; the decoder mirrors them
      conv_activation="relu",  # the conv VAE's nonlinearity: 'relu', 'silu' or 'elu'
      likelihood="bernoulli",  # or 'gaussian'
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
  need(config.likelihood in ("bernoulli", "gaussian"),
       f"likelihood '{config.likelihood}' is unknown; use 'bernoulli' or 'gaussian'")
  need(not (config.likelihood == "bernoulli" and config.scale != "zero_one"),
       "likelihood='bernoulli' needs scale='zero_one' (pixels in [0, 1])")
  need(config.latent_dim > 0 and config.hidden_dim > 0, "latent_dim and hidden_dim must be > 0")
  need(0.0 <= config.ema_decay < 1.0, f"ema_decay must be in [0, 1) (0 = off), got {config.ema_decay}")
  need(config.conv_activation in vae_models.ACTIVATIONS,
       f"conv_activation '{config.conv_activation}' is unknown; choose one of "
       f"{sorted(vae_models.ACTIVATIONS)}")
  need(config.beta > 0, f"beta must be > 0, got {config.beta}")
  need(config.iwae_samples >= 1, f"iwae_samples must be >= 1, got {config.iwae_samples}")
  need(config.iwae_samples == 1 or config.beta == 1.0,
       "beta != 1 only applies to the ELBO; set iwae_samples=1 or beta=1")
  need(config.eval_iwae_samples >= 1 and config.eval_iwae_examples >= 1,
       "eval_iwae_samples and eval_iwae_examples must be >= 1")


def build_model(config, info: data_lib.DatasetInfo) -> vae_models.VAE:
  num_classes = info.num_classes if config.conditional else 0
  dtype = backend.compute_dtype(config)
  if config.model == "vae_mlp":
    encoder = vae_models.MLPEncoder((config.hidden_dim,), config.latent_dim, num_classes,
                                    config.torch_init, dtype)
    decoder = vae_models.MLPDecoder(info.image_shape, (config.hidden_dim,), num_classes,
                                    config.torch_init, dtype)
  else:
    features = tuple(config.conv_features)
    encoder = vae_models.ConvEncoder(features, config.hidden_dim, config.latent_dim, num_classes,
                                     config.conv_activation, dtype)
    decoder = vae_models.ConvDecoder(info.image_shape, features[::-1], config.hidden_dim, num_classes,
                                     config.conv_activation, dtype)
  return vae_models.VAE(encoder, decoder, config.likelihood)


def _log_likelihood(params, likelihood: str, out, x):
  if likelihood == "bernoulli":
    return losses.bernoulli_log_likelihood(out, x)
  return losses.gaussian_log_likelihood(out, params["params"]["log_scale"], x)


def mean_image(likelihood: str, scale: str, out):
  """The decoder's expected image in [0, 1] for display."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(out)
  return jnp.clip((out + 1.0) / 2.0 if scale == "minus_one_one" else out, 0.0, 1.0)


def eval_params(state: TrainState):
  """The parameters evaluation and sampling use: their moving average when the run keeps one
  (ema_decay > 0), else the trained parameters."""
  return state.model_state.get("ema_params", state.params)


def batches_per_step(config) -> int:
  del config
  return 1


def train_labels(config, images, labels, workdir=None):
  """The dataset's labels: the VAEs (the CVAE included) train on them as they are."""
  del config, images, workdir
  return labels


def build(config, info: data_lib.DatasetInfo, total_steps: int = 1) -> Trainable:
  """The VAE `Trainable`; `total_steps` shapes the learning-rate schedule (if any)."""
  model = build_model(config, info)
  likelihood = config.likelihood
  conditional = bool(config.conditional)
  tx = state_lib.adam(config, total_steps)

  def labels_of(batch):
    return batch["label"] if conditional else None

  def init(rng) -> TrainState:
    x = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
    label = jnp.zeros((1,), jnp.int32) if conditional else None
    params = model.init(jax.random.fold_in(rng, 0), x, jax.random.fold_in(rng, 1), label)
    model_state = {"ema_params": params} if config.ema_decay > 0 else None
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=rng,
                             model_state=model_state)

  def per_example_terms(params, batch, rng, num_samples: int, axis_name=None):
    x = batch["image"]
    out, mean, logvar, z = model.apply(params, x, rng, labels_of(batch), num_samples, axis_name)
    log_lik = _log_likelihood(params, likelihood, out, x)  # (S, B)
    return log_lik, losses.gaussian_kl(mean, logvar), (z, mean, logvar)

  def train_step(state: TrainState, batch, axis_name: str | None = None):
    rng = step_rng(state)
    k = config.iwae_samples

    def loss_fn(params):
      log_lik, kl, (z, mean, logvar) = per_example_terms(params, batch, rng, k, axis_name)
      neg_elbo = -log_lik.mean(0) + kl
      if k == 1:
        loss = jnp.mean(-log_lik[0] + config.beta * kl)
      else:
        loss = -jnp.mean(losses.iwae_bound(log_lik, z, mean, logvar))
      return loss, {"loss": loss, "neg_elbo": jnp.mean(neg_elbo), "recon": -jnp.mean(log_lik),
                    "kl": jnp.mean(kl)}

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
      grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
    if config.ema_decay <= 0:
      return state.apply_gradients(grads), metrics
    new = state.apply_gradients(grads)
    decay = state_lib.warmed_up_ema_decay(config.ema_decay, state.step)
    ema = state_lib.ema_update(state.model_state["ema_params"], new.params, decay)
    return new.replace(model_state={"ema_params": ema}), metrics

  @jax.jit
  def eval_sums(params, batch, rng):
    log_lik, kl, _ = per_example_terms(params, batch, rng, 1)
    m = batch["mask"]
    return {"neg_elbo": jnp.sum(m * (kl - log_lik[0])), "recon": jnp.sum(m * -log_lik[0]),
            "kl": jnp.sum(m * kl), "count": jnp.sum(m)}

  def evaluate(state: TrainState, test: data_lib.DeviceData) -> dict:
    """One-sample ELBO terms over the whole split, with fixed noise (the same at every eval)."""
    rng = jax.random.fold_in(state.rng, EVAL_STREAM)
    totals = None
    for i, batch in enumerate(data_lib.eval_batches(test, config.eval_batch_size, scale=config.scale)):
      sums = eval_sums(eval_params(state), batch, jax.random.fold_in(rng, i))
      totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = totals.pop("count")
    return {k: float(v / count) for k, v in totals.items()}

  @functools.partial(jax.jit, static_argnames="num_samples")
  def iwae_chunk(params, batch, rng, num_samples):
    """Per image: the k-sample bound and the k-sample mean ELBO (same samples, so bound >= ELBO)."""
    log_lik, _, (z, mean, logvar) = per_example_terms(params, batch, rng, num_samples)
    log_w = losses.importance_log_weights(log_lik, z, mean, logvar)
    return losses.iwae_bound_from_log_weights(log_w), jnp.mean(log_w, axis=0)

  def full_evaluate(state: TrainState, test: data_lib.DeviceData, *, iwae_samples=None,
                    iwae_examples=None, progress=None) -> dict:
    """The periodic metrics as test_*, plus nll_iwae: -log p(x) by k-sample importance sampling."""
    k = iwae_samples or config.eval_iwae_samples
    n = min(iwae_examples or config.eval_iwae_examples, int(test.labels.shape[0]))
    result = {f"test_{name}": value for name, value in evaluate(state, test).items()}
    subset = data_lib.DeviceData(test.images[:n], test.labels[:n])
    chunk = max(1, min(n, 10_000 // k))  # about 10k decoder evaluations per call
    rng = jax.random.fold_in(state.rng, EVAL_STREAM + 100)
    bound_sum, elbo_sum = 0.0, 0.0
    batches = list(data_lib.eval_batches(subset, chunk, scale=config.scale))
    for i, batch in enumerate(progress(batches) if progress else batches):
      bound, elbo = iwae_chunk(eval_params(state), batch, jax.random.fold_in(rng, i), k)
      bound_sum += float(jnp.sum(bound * batch["mask"]))
      elbo_sum += float(jnp.sum(elbo * batch["mask"]))
    result.update(nll_iwae=-bound_sum / n, nll_iwae_samples=k, nll_iwae_examples=n,
                  nll_iwae_subset_neg_elbo=-elbo_sum / n)
    return result

  @functools.partial(jax.jit, static_argnames="num")
  def _sample(params, rng, labels, num):
    z = jax.random.normal(rng, (num, config.latent_dim))
    out = model.apply(params, z, labels, method=vae_models.VAE.decode)
    return mean_image(likelihood, config.scale, out)

  def sample(state: TrainState, rng, num: int):
    labels = jnp.arange(num, dtype=jnp.int32) % info.num_classes if conditional else None
    images = np.asarray(_sample(eval_params(state), rng, labels, num))
    return images, (None if labels is None else np.asarray(labels))

  @jax.jit
  def _reconstruct(params, batch, rng):
    out, *_ = model.apply(params, batch["image"], rng, labels_of(batch))
    return mean_image(likelihood, config.scale, out[0])

  def log_images(state: TrainState, test: data_lib.DeviceData) -> dict:
    """A sample grid (class per row when conditional) and test originals over reconstructions."""
    rng = jax.random.fold_in(state.rng, SAMPLE_STREAM)  # the same noise at every step
    samples, ncols = writers.sample_grid(lambda num: sample(state, rng, num),
                                         config.num_sample_images,
                                         info.num_classes if conditional else 0)
    batch = next(data_lib.eval_batches(test, 32, scale=config.scale))
    recon = np.asarray(_reconstruct(eval_params(state), batch, rng))
    originals = np.asarray(batch["image"])
    if config.scale == "minus_one_one":
      originals = (originals + 1.0) / 2.0
    pairs = np.concatenate([originals[:16], recon[:16], originals[16:], recon[16:]])
    return {"samples": (samples, ncols), "reconstructions": (pairs, 16)}

  return Trainable(init=init, train_step=train_step, evaluate=evaluate,
                   full_evaluate=full_evaluate, sample=sample, log_images=log_images,
                   best_metric="neg_elbo", best_mode="min")
