"""GAN objectives on discriminator logits and the discriminator penalties: GP, R1, consistency.

Every loss returns a scalar: the mean over the batch (the real and fake terms are averaged
separately, so their batches may differ in size). With D(x) = sigmoid(logit):
log D = -softplus(-logit) and log(1 - D) = -softplus(logit). Logits of any float dtype (bfloat16
included) are taken to at least float32 first: the losses compute and return float32.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from aigc_jax.backend import at_least_float32 as f32
from aigc_jax.noise import batch_noise


def non_saturating_d_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """-log D(x) - log(1 - D(G(z))): the discriminator's cross-entropy (also minimax's)."""
  real_logits, fake_logits = f32(real_logits), f32(fake_logits)
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def non_saturating_g_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """-log D(G(z)) (Goodfellow et al., 2014, section 3): strong gradients early in training."""
  return jnp.mean(jax.nn.softplus(-f32(fake_logits)))


def minimax_g_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """log(1 - D(G(z))), minimised: the original minimax objective (saturates when D wins)."""
  return -jnp.mean(jax.nn.softplus(f32(fake_logits)))


def hinge_d_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """relu(1 - D(x)) + relu(1 + D(G(z))) (Lim & Ye, 2017; Miyato et al., 2018)."""
  real_logits, fake_logits = f32(real_logits), f32(fake_logits)
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def wasserstein_d_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """D(G(z)) - D(x): the WGAN critic loss (needs a Lipschitz constraint, e.g. gradient_penalty)."""
  return jnp.mean(f32(fake_logits)) - jnp.mean(f32(real_logits))


def wasserstein_g_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """-D(G(z)): the generator loss of WGAN and of the hinge GAN."""
  return -jnp.mean(f32(fake_logits))


# name -> (d_loss(real_logits, fake_logits), g_loss(fake_logits))
LOSSES = {
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
    "minimax": (non_saturating_d_loss, minimax_g_loss),
    "hinge": (hinge_d_loss, wasserstein_g_loss),
    "wasserstein": (wasserstein_d_loss, wasserstein_g_loss),
}


def classifier_loss(class_logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """ACGAN's auxiliary term: mean softmax cross-entropy of the class logits against the labels."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f32(class_logits), labels))


def mode_seeking(fake: jnp.ndarray, z: jnp.ndarray, label: jnp.ndarray | None) -> jnp.ndarray:
  """MSGAN's regulariser (Mao et al., 2019) for G: 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| +
  1e-5) over pairs of the batch with the same label (neighbours in the batch sorted by label;
  without labels, its two halves), so that G pays for near-copies within a label; 0 where no
  two share a label."""
  half = fake.shape[0] // 2
  if label is None:
    first, second, same = jnp.arange(half), half + jnp.arange(half), jnp.ones(half)
  else:
    order = jnp.argsort(label)
    first, second = order[0:2 * half:2], order[1:2 * half:2]
    same = (label[first] == label[second]).astype(jnp.float32)

  def pair_mean(x):  # the mean |difference| over the pairs that count
    per_pair = jnp.mean(jnp.abs(f32(x[first]) - f32(x[second])).reshape(half, -1), axis=1)
    return jnp.sum(same * per_pair) / jnp.maximum(jnp.sum(same), 1.0)

  ratio = pair_mean(fake) / jnp.maximum(pair_mean(z), 1e-12)
  return jnp.where(jnp.sum(same) > 0, 1.0 / (ratio + 1e-5), 0.0)  # 0 where no pair shares a label


def _per_example_input_grads(critic_fn: Callable, x: jnp.ndarray) -> jnp.ndarray:
  # The gradient of the batch sum is the per-example gradient when the critic treats examples
  # independently (no BatchNorm in train mode, which mixes the batch).
  return jax.grad(lambda x: jnp.sum(critic_fn(x)))(x)


def _sum_nonbatch(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def gradient_penalty(critic_fn: Callable, real: jnp.ndarray, fake: jnp.ndarray, rng: jax.Array,
                     axis_name: str | None = None) -> jnp.ndarray:
  """WGAN-GP (Gulrajani et al., 2017): mean over x_hat of (||grad critic(x_hat)||_2 - 1)^2.

  x_hat = eps * real + (1 - eps) * fake with eps ~ U(0, 1) per example; the norm is over all
  non-batch axes. `critic_fn` maps a batch to logits (B,); the caller weights it (lambda = 10).
  Under a data axis, eps is drawn for the global batch and sliced (`noise.batch_noise`).
  """
  eps = batch_noise(lambda key, shape: jax.random.uniform(key, shape, real.dtype), rng,
                    (real.shape[0],) + (1,) * (real.ndim - 1), axis_name)
  x_hat = eps * real + (1.0 - eps) * fake
  grads = _per_example_input_grads(critic_fn, x_hat)
  norms = jnp.sqrt(_sum_nonbatch(jnp.square(grads)) + 1e-12)  # finite gradient at 0
  return jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(critic_fn: Callable, real: jnp.ndarray) -> jnp.ndarray:
  """R1 (Mescheder et al., 2018): mean over real x of ||grad_x critic(x)||_2^2.

  Unweighted: the discriminator loss adds gamma / 2 times this.
  """
  grads = _per_example_input_grads(critic_fn, real)
  return jnp.mean(_sum_nonbatch(jnp.square(grads)))


def flip_and_shift(x: jnp.ndarray, flip: jnp.ndarray, shift: jnp.ndarray,
                   max_shift: int) -> jnp.ndarray:
  """x (B, H, W, C) mirrored left-right where `flip` (B,) is true, then moved by `shift` (B, 2)
  whole pixels (down, right; each within +-max_shift), the uncovered border repeating the edge."""
  x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
  pad = max_shift
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  crop = lambda image, s: jax.lax.dynamic_slice(  # noqa: E731
      image, (pad - s[0], pad - s[1], 0), x.shape[1:])
  return jax.vmap(crop)(padded, shift)


def consistency_penalty(critic_fn: Callable, real: jnp.ndarray, rng: jax.Array, max_shift: int = 2,
                        axis_name: str | None = None) -> jnp.ndarray:
  """CR-GAN (Zhang et al., 2020): mean of (critic(x) - critic(T(x)))^2 over real x.

  T mirrors each image with probability 1/2 and shifts it by up to `max_shift` pixels per
  axis. The caller weights it (lambda = 10 in the paper); gradients flow through both critic
  calls (both from the same critic state: a spectral norm's power iteration moves per call).
  """
  size = (real.shape[0],)
  flip = batch_noise(lambda key, shape: jax.random.bernoulli(key, 0.5, shape),
                     jax.random.fold_in(rng, 0), size, axis_name)
  shift = batch_noise(lambda key, shape: jax.random.randint(key, shape, -max_shift, max_shift + 1),
                      jax.random.fold_in(rng, 1), size + (2,), axis_name)
  turned = flip_and_shift(real, flip, shift, max_shift)
  return jnp.mean(jnp.square(critic_fn(real) - critic_fn(turned)))
