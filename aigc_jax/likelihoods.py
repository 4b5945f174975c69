"""Log-likelihoods, KL terms and bounds. Every function returns per-example values (nats),
computed in at least float32 whatever its inputs' dtype (bfloat16 predictions included)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aigc_jax.backend import at_least_float32

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jnp.ndarray, event_ndim: int) -> jnp.ndarray:
  return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def gaussian_kl(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mean, exp(logvar)) || N(0, I)), summed over the last axis."""
  mean, logvar = at_least_float32(mean), at_least_float32(logvar)
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def bernoulli_log_likelihood(logits: jnp.ndarray, x: jnp.ndarray,
                             event_ndim: int = 3) -> jnp.ndarray:
  """sum_pixels [x log sigmoid(l) + (1 - x) log sigmoid(-l)], for x in [0, 1] (not only {0, 1})."""
  logits, x = at_least_float32(logits), at_least_float32(x)
  return _sum_event(x * logits - jax.nn.softplus(logits), event_ndim)


def gaussian_log_likelihood(mean: jnp.ndarray, log_scale: jnp.ndarray, x: jnp.ndarray,
                            event_ndim: int = 3) -> jnp.ndarray:
  """log N(x; mean, exp(log_scale)^2) summed over the event axes."""
  mean, log_scale, x = map(at_least_float32, (mean, log_scale, x))
  z = (x - mean) * jnp.exp(-log_scale)
  return _sum_event(-0.5 * jnp.square(z) - log_scale - 0.5 * _LOG_2PI, event_ndim)


def discretized_logistic_log_likelihood(mean: jnp.ndarray, log_scale: jnp.ndarray, x: jnp.ndarray,
                                        event_ndim: int = 3, num_bins: int = 256) -> jnp.ndarray:
  """log P(bin of x) under a logistic(mean, exp(log_scale)) discretized to `num_bins` bins.

  x is in [0, 1] on the grid k / (num_bins - 1) (uint8 / 255; off-grid values go to the nearest
  bin). Bin k is [x - h, x + h] with h = 1 / (2 (num_bins - 1)), except that bin 0 reaches down
  to -inf and the last bin up to +inf, so for any mean and log_scale (broadcast against x) the
  probabilities of the num_bins bins sum to 1 and every log-likelihood is <= 0. Summed over the
  event axes: nats per image, as in PixelCNN++ (Salimans et al., 2017) with one component.
  """
  mean, log_scale, x = map(at_least_float32, (mean, log_scale, x))
  last = num_bins - 1
  k = jnp.clip(jnp.round(x * last), 0, last)
  inv_scale = jnp.exp(-log_scale)
  upper = (k + 0.5) / last - mean  # the bin's edges relative to the mean
  lower = (k - 0.5) / last - mean
  a, b = upper * inv_scale, lower * inv_scale  # a > b: standardized edges
  log_cdf_upper = jax.nn.log_sigmoid(a)  # log P(X < upper edge)
  log_sf_lower = jax.nn.log_sigmoid(-b)  # log P(X > lower edge)
  # log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)):
  # finite and accurate in both tails, where the difference of two sigmoids rounds to 0.
  log_mass = log_cdf_upper + log_sf_lower + jnp.log(-jnp.expm1(b - a))
  log_p = jnp.where(k == 0, log_cdf_upper, jnp.where(k == last, log_sf_lower, log_mass))
  return _sum_event(log_p, event_ndim)


def log_standard_normal(z: jnp.ndarray) -> jnp.ndarray:
  z = at_least_float32(z)
  return jnp.sum(-0.5 * jnp.square(z) - 0.5 * _LOG_2PI, axis=-1)


def log_diag_normal(z: jnp.ndarray, mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  z, mean, logvar = map(at_least_float32, (z, mean, logvar))
  return jnp.sum(-0.5 * (jnp.square(z - mean) * jnp.exp(-logvar) + logvar + _LOG_2PI), axis=-1)


def importance_log_weights(log_likelihood: jnp.ndarray, z: jnp.ndarray, mean: jnp.ndarray,
                           logvar: jnp.ndarray) -> jnp.ndarray:
  """log p(x|z_s) + log p(z_s) - log q(z_s|x); log_likelihood (S, B), z (S, B, D) -> (S, B)."""
  return log_likelihood + log_standard_normal(z) - log_diag_normal(z, mean, logvar)


def iwae_bound_from_log_weights(log_w: jnp.ndarray) -> jnp.ndarray:
  """log (1/S) sum_s exp(log_w[s]); (S, B) -> (B,)."""
  log_w = at_least_float32(log_w)
  return jax.nn.logsumexp(log_w, axis=0) - jnp.log(log_w.shape[0])


def iwae_bound(log_likelihood: jnp.ndarray, z: jnp.ndarray, mean: jnp.ndarray,
               logvar: jnp.ndarray) -> jnp.ndarray:
  """log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x), the S-sample importance weighted bound.

  log_likelihood: (S, B); z: (S, B, D); mean, logvar: (B, D). Returns (B,).
  With S = 1 it is a one-sample ELBO estimate; it tightens towards log p(x) as S grows.
  """
  return iwae_bound_from_log_weights(importance_log_weights(log_likelihood, z, mean, logvar))
