"""Under compute_dtype='bfloat16' every softmax, log-softmax, normalisation statistic and loss
reduction runs in float32, read off the jaxpr of each family's train step and of the likelihoods.

The rule: no reduction (`REDUCTIONS`) of the forward pass takes a bfloat16 operand. A softmax
reduces (max, then sum), and so do a log-softmax, a norm's mean and variance and a loss's mean,
so the forward rule covers all four; and when their forward runs in float32 their backward does
too (the cast's transpose hands them float32 cotangents). Reductions of the backward pass (JAX
names them `transpose(...)`) may be bfloat16: they are the transposes of bfloat16 broadcasts,
a bias add's or the time embedding's, whose gradient sums over the batch and pixels as a bf16
matmul's weight gradient does. Matmuls and convolutions in bfloat16 are the point of the option.
"""

import jax
import jax.extend
import jax.numpy as jnp
import optax
import pytest

from aigc_jax import gan_losses
from aigc_jax import likelihoods
from tests import test_backend
from tests import test_diffusion

REDUCTIONS = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "cumsum",
    "cumprod", "cummax", "cummin", "cumlogsumexp"
})
BF16 = jnp.dtype(jnp.bfloat16)


def bf16_reductions(jaxpr, backward: bool = False, outer: str = "?"):
  """(forward, backward): 'primitive at file:line:column (function) [name stack]' of each
  reduction of a bfloat16 operand in `jaxpr` and in every sub-jaxpr (jit, custom_jvp/vjp, scan,
  cond, remat, ...), split by pass. An equation whose frames are all inside JAX is placed at
  `outer`, its enclosing equation's place."""
  found = ([], [])
  for eqn in jaxpr.eqns:
    in_backward = backward or "transpose(" in str(eqn.source_info.name_stack)
    here = jax.extend.source_info_util.summarize(eqn.source_info) or outer
    if eqn.primitive.name in REDUCTIONS and any(
        getattr(v.aval, "dtype", None) == BF16 for v in eqn.invars):
      found[in_backward].append(f"{eqn.primitive.name} at {here} [{eqn.source_info.name_stack}]")
    for sub in test_backend.jaxprs_in_params(eqn.params):
      for mine, theirs in zip(found, bf16_reductions(sub, in_backward, here)):
        mine.extend(theirs)
  return found


def assert_forward_in_float32(fn, *args):
  forward, backward = bf16_reductions(jax.make_jaxpr(fn)(*args).jaxpr)
  assert not forward, "bfloat16 reductions in the forward pass:\n" + "\n".join(forward)
  return backward


def test_the_walk_finds_a_bfloat16_softmax_nested_in_sub_jaxprs():
  """A bf16 softmax inside a jit inside a scan is found with its source; its float32 twin and
  the backward of a bf16 bias add are not forward faults."""

  def body(carry, x):
    return carry, jax.jit(jax.nn.softmax)(x)

  x = jnp.ones((3, 4), jnp.bfloat16)
  with pytest.raises(AssertionError, match=r"reduce_max at .*test_bf16\.py"):
    assert_forward_in_float32(lambda x: jax.lax.scan(body, 0, x)[1], x)
  assert_forward_in_float32(lambda x: jax.lax.scan(body, 0, x.astype(jnp.float32))[1], x)
  bias = jnp.ones((4,), jnp.bfloat16)
  grad = jax.grad(lambda b: jnp.sum((x + b).astype(jnp.float32)))
  assert any("reduce_sum" in w for w in assert_forward_in_float32(grad, bias))


def family_step(model):
  """(train_step, abstract state, batch) of one representative config per family, bfloat16."""
  if model == "unet":  # two levels: the average pooling and the attention at 1/2 resolution
    config, trainable = test_diffusion.tiny(compute_dtype="bfloat16", multipliers=(1, 2))
  else:
    extra = dict(conditional=True, aux_classifier=True) if model == "dcgan" else {}
    trainable, config = test_backend.make(model, compute_dtype="bfloat16", **extra)
  state = jax.eval_shape(trainable.init, jax.random.PRNGKey(0))
  return trainable.train_step, state, test_backend.batch(model, config)


@pytest.mark.parametrize("model", ["vae_conv", "dcgan", "unet"])
def test_train_step_reduces_in_float32_under_bfloat16(model):
  """VAE (ELBO), DCGAN with BatchNorm and ACGAN's softmax head, U-Net with GroupNorm and
  attention: the forward pass reduces only float32, while the step does compute in bfloat16
  (its backward holds bf16 bias-gradient sums), so the check is not vacuous."""
  backward = assert_forward_in_float32(*family_step(model))
  assert backward


def bf16(*shape, uniform=False):
  """Standard normal (or, `uniform`, U(0, 1)) draws rounded to bfloat16."""
  draw = jax.random.uniform if uniform else jax.random.normal
  return draw(jax.random.PRNGKey(len(shape)), shape).astype(jnp.bfloat16)


LOSS_NAMES = sorted([f"gan_{name}_{player}" for name in gan_losses.LOSSES for player in "dg"] +
                    ["classifier", "gaussian_kl", "bernoulli", "gaussian", "logistic", "iwae"])


def loss_call(name):
  """(loss function, its bfloat16 arguments) for a name of LOSS_NAMES."""
  images = bf16(8, 4, 4, 1, uniform=True)  # pixels in [0, 1]
  if name.startswith("gan_"):
    d_loss, g_loss = gan_losses.LOSSES[name[4:-2]]
    return (d_loss, (bf16(8), bf16(8) + 1)) if name.endswith("_d") else (g_loss, (bf16(8),))
  return {
      "classifier": (gan_losses.classifier_loss, (bf16(8, 10), jnp.arange(8) % 10)),
      "gaussian_kl": (likelihoods.gaussian_kl, (bf16(8, 4), bf16(8, 4))),
      "bernoulli": (likelihoods.bernoulli_log_likelihood, (bf16(8, 4, 4, 1), images)),
      "gaussian": (likelihoods.gaussian_log_likelihood, (bf16(8, 4, 4, 1), bf16(), images)),
      "logistic": (likelihoods.discretized_logistic_log_likelihood, (bf16(8, 4, 4, 1, uniform=True),
                                                                     bf16(8, 4, 4, 1) - 3, images)),
      "iwae": (likelihoods.iwae_bound, (bf16(3, 8), bf16(3, 8, 4), bf16(8, 4), bf16(8, 4))),
  }[name]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_losses_reduce_in_float32_whatever_their_inputs(name):
  """A loss handed bfloat16 predictions computes and returns float32, and its value is that of
  the float32 inputs (the cast is exact)."""
  fn, args = loss_call(name)
  assert_forward_in_float32(fn, *args)
  got = fn(*args)
  want = fn(*(a.astype(jnp.float32) if a.dtype == BF16 else a for a in args))
  assert got.dtype == jnp.float32
  assert jnp.array_equal(got, want), (got, want)


def test_optax_cross_entropy_alone_would_reduce_in_bfloat16():
  """Why the losses cast: optax's softmax cross-entropy keeps its logits' dtype."""
  forward, _ = bf16_reductions(
      jax.make_jaxpr(optax.softmax_cross_entropy_with_integer_labels)(bf16(8, 10),
                                                                      jnp.arange(8) % 10).jaxpr)
  assert forward
