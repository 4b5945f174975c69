"""Likelihoods, KL and bounds against closed forms and hand computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import likelihoods


def test_gaussian_kl_matches_closed_form_by_hand():
  # KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2, per dimension.
  mean = jnp.array([[0.5, -1.0]])
  logvar = jnp.array([[math.log(0.25), 0.0]])
  expected = (-math.log(0.5) + (0.25 + 0.25) / 2 - 0.5) + (0.0 + (1.0 + 1.0) / 2 - 0.5)
  np.testing.assert_allclose(likelihoods.gaussian_kl(mean, logvar), [expected], rtol=1e-6)


def test_gaussian_kl_matches_monte_carlo():
  mean, logvar = jnp.array([0.3, -0.7, 1.2]), jnp.array([-0.5, 0.4, 0.0])
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.PRNGKey(0), (200_000, 3))
  mc = jnp.mean(likelihoods.log_diag_normal(z, mean, logvar) - likelihoods.log_standard_normal(z))
  np.testing.assert_allclose(mc, likelihoods.gaussian_kl(mean, logvar), rtol=2e-2)
  assert float(likelihoods.gaussian_kl(jnp.zeros(4), jnp.zeros(4))) == 0.0


def test_bernoulli_log_likelihood_by_hand():
  logits = jnp.array([[[[0.0], [2.0]]]])  # (B=1, H=1, W=2, C=1)
  x = jnp.array([[[[1.0], [0.25]]]])
  sig = 1 / (1 + math.exp(-2.0))
  expected = math.log(0.5) + 0.25 * math.log(sig) + 0.75 * math.log(1 - sig)
  np.testing.assert_allclose(likelihoods.bernoulli_log_likelihood(logits, x), [expected], rtol=1e-6)


def test_gaussian_log_likelihood_by_hand():
  x = jnp.full((1, 1, 2, 1), 0.5)
  mean = jnp.array([[[[0.0], [1.0]]]])
  log_scale = jnp.log(2.0)
  per_pixel = -0.5 * (0.5 / 2)**2 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
  np.testing.assert_allclose(likelihoods.gaussian_log_likelihood(mean, log_scale, x),
                             [2 * per_pixel], rtol=1e-6)


def test_iwae_bound_is_log_mean_exp_and_above_the_mean():
  log_w = jnp.array([[-1.0, -5.0], [-3.0, -5.0], [-2.0, -5.0]])  # (S=3, B=2)
  bound = likelihoods.iwae_bound_from_log_weights(log_w)
  expected0 = math.log((math.exp(-1) + math.exp(-3) + math.exp(-2)) / 3)
  np.testing.assert_allclose(bound, [expected0, -5.0], rtol=1e-6)
  assert float(bound[0]) > float(jnp.mean(log_w[:, 0]))


def test_iwae_with_exact_posterior_is_exact():
  # Linear-Gaussian model where q = p(z|x): every importance weight equals p(x).
  # p(z) = N(0,1), p(x|z) = N(z, 1) => p(x) = N(0, 2), p(z|x) = N(x/2, 1/2).
  x = 0.8
  mean, logvar = jnp.array([[x / 2]]), jnp.array([[math.log(0.5)]])
  z = mean + jnp.sqrt(0.5) * jax.random.normal(jax.random.PRNGKey(1), (7, 1, 1))
  log_lik = -0.5 * (x - z[..., 0])**2 - 0.5 * math.log(2 * math.pi)
  log_px = -0.25 * x**2 - 0.5 * math.log(4 * math.pi)
  np.testing.assert_allclose(likelihoods.iwae_bound(log_lik, z, mean, logvar), [log_px], rtol=1e-5)
