"""GAN losses against hand computations, gradient penalties on critics with known gradients, EMA."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import gan_losses

REAL = [1.0, -2.0, 0.5]
FAKE = [0.5, 3.0]


def softplus(x):
  return math.log1p(math.exp(x))


def mean(xs):
  return sum(xs) / len(xs)


def test_non_saturating_and_minimax_by_hand():
  real, fake = jnp.array(REAL), jnp.array(FAKE)
  d = mean([softplus(-r) for r in REAL]) + mean([softplus(f) for f in FAKE])
  d_fn, g_fn = gan_losses.LOSSES["non_saturating"]
  np.testing.assert_allclose(d_fn(real, fake), d, rtol=1e-6)
  np.testing.assert_allclose(g_fn(fake), mean([softplus(-f) for f in FAKE]), rtol=1e-6)
  d_fn, g_fn = gan_losses.LOSSES["minimax"]
  np.testing.assert_allclose(d_fn(real, fake), d, rtol=1e-6)
  # mean log(1 - sigmoid(f)), written out from the sigmoid.
  expected = mean([math.log(1.0 - 1.0 / (1.0 + math.exp(-f))) for f in FAKE])
  np.testing.assert_allclose(g_fn(fake), expected, rtol=1e-5)


def test_hinge_by_hand():
  d_fn, g_fn = gan_losses.LOSSES["hinge"]
  # relu(1 - real) = [0, 3, 0.5]; relu(1 + fake) = [1.5, 4].
  np.testing.assert_allclose(d_fn(jnp.array(REAL), jnp.array(FAKE)), 3.5 / 3 + 5.5 / 2, rtol=1e-6)
  np.testing.assert_allclose(d_fn(jnp.array([2.0]), jnp.array([-1.5])), 0.0)
  np.testing.assert_allclose(g_fn(jnp.array(FAKE)), -1.75, rtol=1e-6)


def test_wasserstein_by_hand():
  d_fn, g_fn = gan_losses.LOSSES["wasserstein"]
  np.testing.assert_allclose(d_fn(jnp.array(REAL), jnp.array(FAKE)), 1.75 - (-0.5 / 3), rtol=1e-6)
  np.testing.assert_allclose(g_fn(jnp.array(FAKE)), -1.75, rtol=1e-6)


def test_losses_table_has_the_four_objectives():
  assert set(gan_losses.LOSSES) == {"non_saturating", "minimax", "hinge", "wasserstein"}


def test_classifier_loss_by_hand():
  logits = jnp.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
  expected = mean([-math.log(3.0 / 4.0), -math.log(1.0 / 5.0)])
  np.testing.assert_allclose(gan_losses.classifier_loss(logits, jnp.array([1, 1])), expected,
                             rtol=1e-6)


def _linear_critic(w):
  return lambda x: jnp.sum(w * x, axis=(1, 2, 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_penalty_of_linear_critic(seed):
  rng = np.random.default_rng(seed)
  w, real, fake = (
      jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(4, 4, 2), (5, 4, 4, 2), (5, 4, 4, 2)])
  w = 0.3 * w
  k_eps = jax.random.PRNGKey(seed)
  norm = float(jnp.linalg.norm(w))
  gp = gan_losses.gradient_penalty(_linear_critic(w), real, fake, k_eps)
  np.testing.assert_allclose(gp, (norm - 1.0)**2, rtol=1e-5)
  # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|: the penalty trains the critic.
  grad = jax.jit(
      jax.grad(lambda w: gan_losses.gradient_penalty(_linear_critic(w), real, fake, k_eps)))(w)
  np.testing.assert_allclose(grad, 2.0 * (norm - 1.0) * w / norm, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_interpolates_uniformly_per_example():
  # critic 0.5 x^2 on x_hat = eps * 1 + (1 - eps) * 0: the gradient is eps, the penalty
  # mean (eps - 1)^2, whose expectation under U(0, 1) is 1/3 (sd of the mean ~ 0.004 here).
  real, fake = jnp.ones((4000, 1)), jnp.zeros((4000, 1))
  gp = gan_losses.gradient_penalty(lambda x: 0.5 * jnp.sum(x**2, axis=1), real, fake,
                                   jax.random.PRNGKey(0))
  assert abs(float(gp) - 1.0 / 3.0) < 0.02


def test_gradient_penalty_where_real_equals_fake():
  x = jnp.array([[[[0.5]], [[0.0]]], [[[3.0]], [[4.0]]]])  # (2, 2, 1, 1): norms 0.5 and 5
  gp = gan_losses.gradient_penalty(lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3)), x, x,
                                   jax.random.PRNGKey(3))
  np.testing.assert_allclose(gp, mean([(0.5 - 1.0)**2, (5.0 - 1.0)**2]), rtol=1e-5)


def test_r1_penalty():
  rng = np.random.default_rng(0)
  w = jnp.asarray(0.3 * rng.normal(size=(4, 4, 2)), jnp.float32)
  real = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
  np.testing.assert_allclose(gan_losses.r1_penalty(_linear_critic(w), real), float(jnp.sum(w**2)),
                             rtol=1e-5)
  x = jnp.array([[1.0, 2.0], [0.0, 3.0]])
  np.testing.assert_allclose(gan_losses.r1_penalty(lambda x: 0.5 * jnp.sum(x**2, axis=1), x),
                             mean([5.0, 9.0]), rtol=1e-6)


def test_flip_and_shift_by_hand():
  x = jnp.arange(2 * 3 * 3, dtype=jnp.float32).reshape(2, 3, 3, 1)
  out = gan_losses.flip_and_shift(x, jnp.array([True, False]), jnp.array([[0, 0], [1, -1]]), 1)
  np.testing.assert_array_equal(out[0, ..., 0], [[2, 1, 0], [5, 4, 3], [8, 7, 6]])  # mirrored
  # moved one row down and one column left; the top row and right column repeat the edge
  np.testing.assert_array_equal(out[1, ..., 0], [[10, 11, 11], [10, 11, 11], [13, 14, 14]])


def test_consistency_penalty_of_symmetric_and_antisymmetric_critics():
  """No shift: a left-right symmetric critic scores 0; c = sum(left) - sum(right) changes sign
  when mirrored, so each mirrored image adds (2c)^2, and about half of them are mirrored."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 4, 4, 1)), jnp.float32)
  symmetric = lambda x: jnp.sum(x + x[:, :, ::-1], axis=(1, 2, 3))  # noqa: E731
  antisymmetric = lambda x: jnp.sum(x[:, :, :2] - x[:, :, 2:], axis=(1, 2, 3))  # noqa: E731
  key = jax.random.PRNGKey(3)
  assert float(gan_losses.consistency_penalty(symmetric, x, key, max_shift=0)) < 1e-9
  penalty = gan_losses.consistency_penalty(antisymmetric, x, key, max_shift=0)
  per_image = np.asarray(4.0 * antisymmetric(x)**2)
  # the penalty is the sum of per_image over the mirrored images, divided by 64
  assert 0.25 * per_image.mean() < float(penalty) < 0.75 * per_image.mean()


def test_mode_seeking_pairs_same_labels_by_hand():
  fake = jnp.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [5.0, 5.0]])
  z = jnp.array([[0.0], [1.0], [2.0], [4.0], [9.0]])
  # Sorted by label: rows 1, 3 (label 0), then 0, 2 (label 1), then 4 (unpaired).
  label = jnp.array([1, 0, 1, 0, 2])
  moved = (abs(1 - 0) + abs(1 - 3)) / 2, (abs(0 - 2) + abs(0 - 0)) / 2  # 1.5 and 1.0
  apart = abs(1 - 4), abs(0 - 2)  # 3 and 2
  want = 1 / (np.mean(moved) / np.mean(apart) + 1e-5)
  np.testing.assert_allclose(gan_losses.mode_seeking(fake, z, label), want, rtol=1e-6)
  # A pair across labels does not count: rows 1 and 3 are the only pair of label 0.
  label = jnp.array([1, 0, 2, 0, 3])
  np.testing.assert_allclose(gan_losses.mode_seeking(fake, z, label), 1 / (1.5 / 3 + 1e-5),
                             rtol=1e-6)
  assert float(gan_losses.mode_seeking(fake, z, jnp.arange(5))) == 0.0  # no pair: no charge


def test_mode_seeking_without_labels_pairs_the_halves_and_falls_as_samples_spread():
  z = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
  fake = jnp.tanh(z @ jnp.ones((4, 6)))
  moved = jnp.mean(jnp.abs(fake[:4] - fake[4:]))
  apart = jnp.mean(jnp.abs(z[:4] - z[4:]))
  np.testing.assert_allclose(gan_losses.mode_seeking(fake, z, None), 1 / (moved / apart + 1e-5),
                             rtol=1e-5)
  assert gan_losses.mode_seeking(2 * fake, z, None) < gan_losses.mode_seeking(fake, z, None)
