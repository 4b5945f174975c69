"""Shared layers: the pixel shuffle, the upsampling layers against flax's transposed
convolution, PyTorch-style init, spectral norm and the convolution with fast derivatives."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key
from helpers import numpy_variables
from helpers import top_singular_value

from aigc_jax.models import layers
from aigc_jax.models.layers import TRANSPOSE_IMPLS
from aigc_jax.models.layers import TransposeUpsample
from aigc_jax.models.layers import conv_general_dilated
from aigc_jax.models.layers import maybe_spectral


def test_depth_to_space_puts_each_pixels_channels_in_a_factor_by_factor_block():
  x = jnp.arange(2 * 8, dtype=jnp.float32).reshape(1, 1, 2, 8)  # 2 pixels of 2 x 2 x 2 channels
  got = np.asarray(layers.depth_to_space(x, 2))
  assert got.shape == (1, 2, 4, 2)
  # pixel p, sub-row i, sub-column j, channel c came from channel (2 i + j) * 2 + c of pixel p
  want = np.array([[[0, 1], [2, 3], [8, 9], [10, 11]], [[4, 5], [6, 7], [12, 13], [14, 15]]])
  np.testing.assert_array_equal(got[0], want)
  with pytest.raises(ValueError, match="3 channels do not divide by factor"):
    layers.depth_to_space(jnp.zeros((1, 2, 2, 3)), 2)


def test_torch_init_is_uniform_with_a_third_of_flax_s_kernel_variance():
  """U(+-1/sqrt(fan_in)) has variance 1 / (3 fan_in); flax's lecun normal 1 / fan_in."""
  assert layers.init_kwargs(False, 16) == {}
  inits = layers.init_kwargs(True, 16)
  kernel = np.asarray(inits["kernel_init"](jax.random.PRNGKey(0), (200, 500)))
  bias = np.asarray(inits["bias_init"](jax.random.PRNGKey(1), (100_000,)))
  for draws in (kernel, bias):
    assert np.abs(draws).max() <= 0.25 and np.abs(draws).max() > 0.249
    np.testing.assert_allclose(draws.var(), 1 / 48, rtol=0.02)
  lecun = np.asarray(nn.initializers.lecun_normal()(jax.random.PRNGKey(2), (16, 100_000)))
  np.testing.assert_allclose(lecun.var() / kernel.var(), 3.0, rtol=0.03)


@pytest.mark.parametrize(
    "layer, fan_in",
    [
        (layers.SubPixelUpsample(4, torch_init=True), 3 * 3 * 2),  # k * k * in
        (TransposeUpsample(16, torch_init=True), 16 * 16),  # PyTorch's ConvTranspose2d: 16 * out
    ],
    ids=["subpixel", "transpose"])
def test_upsampling_layers_draw_torch_init_with_pytorch_s_fan_in(layer, fan_in):
  """Each weight within +-1/sqrt(fan_in); the largest of the kernel's (> 100) and of the bias's
  (16) draws near it."""
  params = layer.init(key(), jnp.zeros((1, 3, 3, 2)))["params"]
  bound = 1.0 / fan_in**0.5
  leaves = jax.tree_util.tree_leaves(params)
  assert sorted(x.size for x in leaves)[0] == 16 and len(leaves) == 2
  for x in leaves:
    top = float(jnp.abs(x).max())
    assert top <= bound * (1 + 1e-6) and top > (0.9 if x.size > 100 else 0.5) * bound


def test_transpose_upsample_refuses_an_unknown_impl():
  with pytest.raises(ValueError, match="impl must be one of .*'fft'"):
    jax.eval_shape(TransposeUpsample(4, impl="fft").init, key(), jnp.zeros((1, 3, 3, 2)))


@pytest.mark.parametrize("impl", TRANSPOSE_IMPLS)
def test_transpose_upsample_is_flax_conv_transpose_with_rearranged_weights(impl):
  """TransposeUpsample == nn.ConvTranspose((4, 4), (2, 2), 'SAME'), kernel mapped as documented,
  in both formulations, with the same parameter tree; the same number of weights."""
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
  ours = TransposeUpsample(4, impl=impl)
  variables = TransposeUpsample(4).init(key(), x)
  assert (jax.tree_util.tree_structure(ours.init(key(),
                                                 x)) == jax.tree_util.tree_structure(variables))
  kernel = np.asarray(variables["params"]["Conv_0"]["kernel"]).reshape(2, 2, 3, 2, 2, 4)
  bias = np.random.default_rng(1).normal(size=4).astype(np.float32)
  big = np.zeros((4, 4, 3, 4), np.float32)
  for dy, dx, py, px in np.ndindex(2, 2, 2, 2):
    big[2 * dy + 1 - py, 2 * dx + 1 - px] = kernel[dy, dx, :, py, px]
  flax_t = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding="SAME")
  want = flax_t.apply({"params": {"kernel": big, "bias": bias}}, x)
  params = {"Conv_0": variables["params"]["Conv_0"], "bias": bias}
  got = ours.apply({"params": params}, x)
  assert got.shape == (2, 10, 12, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert sum(a.size for a in jax.tree_util.tree_leaves(params)) == big.size + bias.size


class _SNDense(nn.Module):

  @nn.compact
  def __call__(self, x, update_stats):
    return maybe_spectral(nn.Dense(5, name="dense"), True, update_stats)(x)


def test_spectral_norm_dense_converges_to_unit_singular_value():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 12)), jnp.float32)
  model = _SNDense()
  variables = numpy_variables(model, x, update_stats=False)
  assert set(variables["params"]["dense"]) == {"kernel", "bias"}  # u, sigma are not params
  stats = ("SpectralNorm_0", "dense/kernel/sigma")
  assert float(variables["batch_stats"][stats[0]][stats[1]]) == 1.0  # before iterating
  kernel = 3.0 * np.asarray(variables["params"]["dense"]["kernel"])
  variables["params"]["dense"]["kernel"] = jnp.asarray(kernel)
  assert top_singular_value(kernel) > 3.0

  @jax.jit
  def step(variables):  # a train-mode call: one power iteration, u and sigma written
    return {**variables, **model.apply(variables, x, update_stats=True, mutable=["batch_stats"])[1]}

  for _ in range(20):
    variables = step(variables)
  sigma = float(variables["batch_stats"][stats[0]][stats[1]])
  np.testing.assert_allclose(sigma, top_singular_value(kernel), rtol=1e-3)
  assert abs(top_singular_value(kernel / sigma) - 1.0) < 1e-2
  # Eval mode (nothing mutable) computes x @ (W / sigma) + b.
  bias = np.asarray(variables["params"]["dense"]["bias"])
  np.testing.assert_allclose(
      jax.jit(model.apply, static_argnames="update_stats")(variables, x, update_stats=False),
      np.asarray(x) @ (kernel / sigma) + bias, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("strides,padding,dilation", [((2, 2), "SAME", (1, 1)),
                                                      ((1, 1), ((1, 0), (2, 1)), (1, 1)),
                                                      ((1, 1), "VALID", (2, 2))])
def test_conv_with_fast_higher_derivatives_matches_lax(strides, padding, dilation):
  """Values, gradients, the gradient-penalty style second derivatives (d/dw of d/dx) and third
  derivatives of layers.conv_general_dilated equal those of lax.conv_general_dilated."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 9, 8, 2)), jnp.float32)
  w1 = jnp.asarray(rng.normal(size=(3, 3, 2, 4)) * 0.3, jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(2, 2, 4, 3)) * 0.3, jnp.float32)

  def critic(conv, params, x):  # smooth, so third derivatives are not zero
    dn = ("NHWC", "HWIO", "NHWC")
    h = jnp.tanh(conv(x, params[0], strides, padding, rhs_dilation=dilation, dimension_numbers=dn))
    return jnp.sum(jnp.tanh(conv(h, params[1], (1, 1), "SAME", dimension_numbers=dn))**2)

  def penalty(conv, params, x):
    g = jax.grad(lambda x: critic(conv, params, x))(x)
    return jnp.sum(g**2) + critic(conv, params, x)

  results = {}
  for name, conv in (("lax", jax.lax.conv_general_dilated), ("fast", conv_general_dilated)):
    value, grads = jax.value_and_grad(functools.partial(penalty, conv))((w1, w2), x)
    grad_norm = lambda params, x, arg: sum(  # noqa: E731
        jnp.sum(g**2)
        for g in jax.tree.leaves(jax.grad(functools.partial(penalty, conv), arg)(params, x)))
    third = jax.grad(grad_norm, (0, 1))((w1, w2), x, 0), jax.grad(grad_norm, (0, 1))((w1, w2), x, 1)
    results[name] = (value, grads, third)
  for fast, lax in zip(jax.tree.leaves(results["fast"]), jax.tree.leaves(results["lax"])):
    assert float(jnp.max(jnp.abs(lax))) > 0
    np.testing.assert_allclose(fast, lax, rtol=2e-4, atol=1e-5 * float(jnp.max(jnp.abs(lax))))
