"""The VAE family: shapes, the ELBO against a hand computation, jit == no jit, learning happens."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import STEADY_ADAM

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax.models import vae as vae_models
from conftest import needs_fashion_mnist

TINY = data_lib.DatasetInfo("tiny", (2, 2, 1), 3, "tiny", None)


def params_of(state):
  return state.players["vae"].params


def with_params(state, params):
  return state.replace(players={"vae": state.players["vae"].replace(params=params)})


def tiny_config(model="vae_mlp", **overrides):
  values = dict(latent_dim=2, hidden_dim=4, eval_batch_size=2, conv_features=(4, 8))
  values.update(overrides)
  return config_lib.get_config(model, **values)


def tiny_data(n=3, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 2, 2, 1), dtype=np.uint8)
  return data_lib.to_device(images, np.arange(n, dtype=np.int32) % 3)


@pytest.mark.slow
@pytest.mark.parametrize("model,conditional", [("vae_mlp", False), ("vae_mlp", True),
                                               ("vae_conv", False), ("vae_conv", True)])
def test_shapes_per_model_and_label(model, conditional):
  info = data_lib.DATASETS["fashion_mnist"]
  config = tiny_config(model, conditional=conditional)
  trainable = families.get(model).build(config, info)
  state = trainable.init(jax.random.PRNGKey(0))
  batch = {"image": jnp.full((5, 28, 28, 1), 0.5), "label": jnp.array([0, 1, 2, 3, 9])}
  new_state, metrics = trainable.train_step(state, batch)
  assert int(new_state.step) == 1
  assert set(metrics) == {"loss", "neg_elbo", "recon", "kl"}
  images, labels = trainable.sample(new_state, jax.random.PRNGKey(1), 12)
  assert images.shape == (12, 28, 28, 1) and images.min() >= 0 and images.max() <= 1
  if conditional:
    np.testing.assert_array_equal(labels, np.arange(12) % 10)
  else:
    assert labels is None


def test_gaussian_likelihood_learns_its_scale():
  config = tiny_config(likelihood="gaussian", scale="minus_one_one", learning_rate=0.05)
  trainable = families.get("vae_mlp").build(config, TINY)
  state = trainable.init(jax.random.PRNGKey(0))
  assert float(params_of(state)["params"]["log_scale"]) == 0.0
  batch = {"image": jnp.linspace(-1, 1, 16).reshape(4, 2, 2, 1), "label": jnp.arange(4) % 3}
  step = jax.jit(trainable.train_step)
  for _ in range(50):
    state, metrics = step(state, batch)
  # A unit-scale Gaussian is far too wide for these pixels: the learned scale must shrink.
  assert float(params_of(state)["params"]["log_scale"]) < -0.3
  assert np.isfinite(float(metrics["loss"]))
  images, _ = trainable.sample(state, jax.random.PRNGKey(1), 3)
  assert images.shape == (3, 2, 2, 1) and images.min() >= 0 and images.max() <= 1


def test_conditional_decoder_depends_on_the_label():
  info = data_lib.DATASETS["fashion_mnist"]
  trainable = families.get("vae_mlp").build(tiny_config(conditional=True), info)
  state = trainable.init(jax.random.PRNGKey(0))
  model = families.get("vae_mlp").build_model(tiny_config(conditional=True), info)
  z = jnp.zeros((2, 2))
  out = model.apply(params_of(state), z, jnp.array([0, 1]), method=vae_models.VAE.decode)
  assert not np.allclose(out[0], out[1])


@pytest.mark.slow
def test_conv_activation_changes_the_function_not_the_parameters():
  info = data_lib.DATASETS["fashion_mnist"]
  family = families.get("vae_conv")
  models = {
      a: family.build_model(tiny_config("vae_conv", conv_activation=a), info)
      for a in vae_models.ACTIVATIONS
  }
  params = models["relu"].init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)),
                               jax.random.PRNGKey(1))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
  outs = {}
  for name, model in models.items():
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jax.random.PRNGKey(1))
    chex.assert_trees_all_equal_shapes(shapes, params)
    outs[name] = model.apply(params, x, method=vae_models.VAE.encode)[0]
  assert len({float(jnp.sum(out)) for out in outs.values()}) == len(outs)
  with pytest.raises(config_lib.ConfigError, match="conv_activation 'tanh' is unknown"):
    config_lib.validate(tiny_config("vae_conv", conv_activation="tanh"))


def test_eval_neg_elbo_matches_hand_computation():
  """A linear MLP VAE with a near-deterministic encoder: the ELBO by hand in numpy."""
  config = tiny_config(hidden_dim=4)
  trainable = families.get("vae_mlp").build(config, TINY)
  state = trainable.init(jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map(np.asarray, params_of(state))["params"]
  p = jax.tree_util.tree_map(lambda a: a.copy(), params)
  p["encoder"]["logvar"]["kernel"][:] = 0.0
  p["encoder"]["logvar"]["bias"][:] = -30.0  # q(z|x) nearly a point mass: z == mean
  state = with_params(state, {"params": p})
  test = tiny_data(3)
  x = np.asarray(test.images, np.float64).reshape(3, 4) / 255.0

  def dense(h, layer):
    return h @ layer["kernel"] + layer["bias"]

  enc, dec = p["encoder"], p["decoder"]
  h = np.maximum(dense(x, enc["Dense_0"]), 0)
  mean, logvar = dense(h, enc["mean"]), dense(h, enc["logvar"])
  logits = dense(np.maximum(dense(mean, dec["Dense_0"]), 0), dec["Dense_1"])
  log_lik = np.sum(x * logits - np.log1p(np.exp(logits)), axis=1)
  kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=1)
  metrics = trainable.evaluate(state, test)  # eval batches of 2: one padded example, masked
  np.testing.assert_allclose(metrics["neg_elbo"], np.mean(kl - log_lik), rtol=1e-4)
  np.testing.assert_allclose(metrics["kl"], np.mean(kl), rtol=1e-4)


def test_discretized_logistic_eval_neg_elbo_matches_hand_computation():
  """The decoder's 2C channels are (mean, log-scale); bin probabilities from the logistic CDF."""
  config = tiny_config(likelihood="discretized_logistic")
  trainable = families.get("vae_mlp").build(config_lib.validate(config), TINY)
  state = trainable.init(jax.random.PRNGKey(0))
  p = jax.tree_util.tree_map(lambda a: np.array(a, np.float64), params_of(state))["params"]
  p["encoder"]["logvar"]["kernel"][:] = 0.0
  p["encoder"]["logvar"]["bias"][:] = -30.0  # q(z|x) nearly a point mass: z == mean
  p["decoder"]["Dense_1"]["bias"][1::2] = -1.5  # narrower logistics than at initialisation
  state = with_params(state, {"params": jax.tree_util.tree_map(np.float32, p)})
  test = tiny_data(3)
  levels = np.asarray(test.images, np.float64).reshape(3, 4)
  dense = lambda h, layer: h @ layer["kernel"] + layer["bias"]  # noqa: E731
  enc, dec = p["encoder"], p["decoder"]
  mean = dense(np.maximum(dense(levels / 255.0, enc["Dense_0"]), 0), enc["mean"])
  logvar = dense(np.maximum(dense(levels / 255.0, enc["Dense_0"]), 0), enc["logvar"])
  out = dense(np.maximum(dense(mean, dec["Dense_0"]), 0), dec["Dense_1"]).reshape(3, 4, 2)
  loc, scale = out[..., 0], np.exp(out[..., 1])
  cdf = lambda t: 1.0 / (1.0 + np.exp(-(t - loc) / scale))  # noqa: E731
  upper = np.where(levels == 255, 1.0, cdf((levels + 0.5) / 255.0))
  lower = np.where(levels == 0, 0.0, cdf((levels - 0.5) / 255.0))
  log_lik = np.sum(np.log(upper - lower), axis=1)
  kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=1)
  metrics = trainable.evaluate(state, test)
  np.testing.assert_allclose(metrics["recon"], np.mean(-log_lik), rtol=1e-4)
  np.testing.assert_allclose(metrics["neg_elbo"], np.mean(kl - log_lik), rtol=1e-4)
  # The same images on the [-1, 1] scale are the same intensity levels: with an encoder that
  # ignores its input (so z does not depend on the scale), the same likelihood.
  p["encoder"]["Dense_0"]["kernel"][:] = 0.0
  blind = with_params(state, {"params": jax.tree_util.tree_map(np.float32, p)})
  other = families.get("vae_mlp").build(
      tiny_config(likelihood="discretized_logistic", scale="minus_one_one"), TINY)
  np.testing.assert_allclose(
      other.evaluate(blind, test)["recon"],
      trainable.evaluate(blind, test)["recon"], rtol=1e-5)
  images, _ = trainable.sample(state, jax.random.PRNGKey(1), 5)
  assert images.shape == (5, 2, 2, 1) and images.min() >= 0 and images.max() <= 1


@pytest.mark.slow
class JitAgreesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_train_step_jit_and_no_jit_agree(self):
    config = tiny_config("vae_mlp", iwae_samples=3, **STEADY_ADAM)  # fused vs op by op
    trainable = families.get("vae_mlp").build(config, TINY)
    state = trainable.init(jax.random.PRNGKey(0))
    batch = {"image": jnp.linspace(0, 1, 16).reshape(4, 2, 2, 1), "label": jnp.arange(4) % 3}
    step = self.variant(trainable.train_step)
    for _ in range(3):
      state, metrics = step(state, batch)
    reference = trainable.init(jax.random.PRNGKey(0))
    for _ in range(3):
      reference, ref_metrics = trainable.train_step(reference, batch)
    chex.assert_trees_all_close(params_of(state), params_of(reference), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(metrics, ref_metrics, rtol=1e-5)
    assert int(state.step) == 3


def test_ema_params_follow_the_formula_and_are_what_evaluation_uses():
  config = tiny_config(ema_decay=0.5)
  trainable = families.get("vae_mlp").build(config, TINY)
  state = trainable.init(jax.random.PRNGKey(0))
  batch = {"image": jnp.linspace(0, 1, 16).reshape(4, 2, 2, 1), "label": jnp.arange(4) % 3}
  state, _ = trainable.train_step(state, batch)  # step 0: warmed-up decay min(0.5, 1/10) = 0.1
  first = params_of(state)
  state, _ = trainable.train_step(state, batch)  # step 1: min(0.5, 2/11)
  init = params_of(trainable.init(jax.random.PRNGKey(0)))
  want = jax.tree_util.tree_map(
      lambda e, p: 2 / 11 * e + 9 / 11 * p,
      jax.tree_util.tree_map(lambda p0, p1: 0.1 * p0 + 0.9 * p1, init, first), params_of(state))
  chex.assert_trees_all_close(state.ema_params, want, rtol=1e-5, atol=1e-7)
  test = tiny_data(3)
  with_ema = trainable.evaluate(state, test)
  swapped = with_params(state, state.ema_params).replace(ema_params={})
  assert with_ema == trainable.evaluate(swapped, test)  # the EMA parameters, not the raw ones
  assert with_ema != trainable.evaluate(state.replace(ema_params={}), test)


def test_full_evaluate_iwae_is_tighter_than_elbo_on_the_same_images():
  config = tiny_config(eval_iwae_samples=64, eval_iwae_examples=3)
  trainable = families.get("vae_mlp").build(config, TINY)
  state = trainable.init(jax.random.PRNGKey(0))
  result = trainable.full_evaluate(state, tiny_data(5))
  assert result["nll_iwae_samples"] == 64 and result["nll_iwae_examples"] == 3
  assert result["nll_iwae"] < result["nll_iwae_subset_neg_elbo"]
  assert np.isfinite(result["test_neg_elbo"])


@pytest.mark.slow
@needs_fashion_mnist
def test_loss_falls_on_real_fashion_mnist():
  config = config_lib.get_config("vae_mlp", hidden_dim=128)
  info = data_lib.DATASETS["fashion_mnist"]
  trainable = families.get("vae_mlp").build(config, info)
  train = data_lib.to_device(*data_lib.load_split("fashion_mnist", "train"))
  run = parallel.make_train_loop(trainable.train_step, batch_size=64, steps_per_call=50)
  perm = data_lib.epoch_permutation(0, 0, int(train.labels.shape[0]))
  state = trainable.init(jax.random.PRNGKey(0))
  state, first = run(state, train, perm, 0, 20)
  state, _ = run(state, train, perm, 20, 260)
  state, last = run(state, train, perm, 280, 20)
  first_loss, last_loss = float(first["loss"]) / 20, float(last["loss"]) / 20
  assert int(state.step) == 300
  assert last_loss < 0.7 * first_loss, (first_loss, last_loss)
  assert last_loss < 300.0  # nats per image; an untrained model is above 500


@pytest.mark.parametrize("features", [(8, 16, 32), (8,), (8, 0)])
def test_conv_features_are_the_two_stages_the_decoder_reverses(features):
  with pytest.raises(config_lib.ConfigError, match=r"conv_features must be two positive widths"):
    config_lib.validate(tiny_config("vae_conv", conv_features=features))
  config = config_lib.validate(tiny_config("vae_conv", conv_features=(8, 16)))
  model = families.get("vae_conv").build_model(config, data_lib.DATASETS["fashion_mnist"])
  assert (model.encoder.features, model.decoder.features) == ((8, 16), (16, 8))


def conv_vae_shapes(side, channels, likelihood="bernoulli"):
  """The conv VAE's ({'encoder/Conv_0/kernel': shape, ...}, reconstruction) for (side, side,
  channels) images, traced only; conv_features (4, 8), hidden_dim 4, latent_dim 2."""
  info = data_lib.DatasetInfo(f"x{side}", (side, side, channels), 10, "x", None)
  model = families.get("vae_conv").build_model(tiny_config("vae_conv", likelihood=likelihood), info)
  x, rng = jnp.zeros((2, side, side, channels)), jax.random.PRNGKey(1)
  variables, (out, *_) = jax.eval_shape(lambda: (lambda v: (v, model.apply(v, x, rng)))
                                        (model.init(jax.random.PRNGKey(0), x, rng)))
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return {"/".join(str(k.key) for k in path): leaf.shape for path, leaf in flat}, out


@pytest.mark.parametrize("side,channels", [(28, 1), (32, 3)])
def test_conv_vae_keeps_two_stages_at_sides_28_and_32(side, channels):
  shapes, out = conv_vae_shapes(side, channels)
  assert out.shape == (1, 2, side, side, channels)
  low = side // 4  # 7 or 8
  assert shapes["encoder/Conv_1/kernel"] == (4, 4, 4, 8)
  assert shapes["encoder/Conv_2/kernel"] == (3, 3, 8, 8)  # the 3x3 conv at the lowest resolution
  assert shapes["encoder/Dense_0/kernel"] == (low * low * 8, 4)
  assert shapes["decoder/Dense_1/kernel"] == (4, low * low * 8)
  assert shapes["decoder/SubPixelUpsample_1/Conv_0/kernel"] == (3, 3, 4, 4 * channels)
  assert not any(k.startswith(("encoder/Conv_3", "decoder/SubPixelUpsample_2")) for k in shapes)


@pytest.mark.parametrize("channels,likelihood", [(3, "bernoulli"), (1, "bernoulli"),
                                                 (3, "discretized_logistic")])
def test_conv_vae_has_a_third_stage_at_side_64(channels, likelihood):
  """Encoder widths 4, 8 and 2 * 8 down to 8x8; the decoder from 8x8 x 16 up through 8, 4, C."""
  shapes, out = conv_vae_shapes(64, channels, likelihood)
  outputs = channels * vae_models.LIKELIHOODS[likelihood]
  assert out.shape == (1, 2, 64, 64, outputs)
  assert shapes["encoder/Conv_2/kernel"] == (4, 4, 8, 16)
  assert shapes["encoder/Conv_3/kernel"] == (3, 3, 16, 16)
  assert shapes["encoder/Dense_0/kernel"] == (8 * 8 * 16, 4)
  assert shapes["decoder/Dense_1/kernel"] == (4, 8 * 8 * 16)
  assert shapes["decoder/SubPixelUpsample_0/Conv_0/kernel"] == (3, 3, 16, 4 * 8)
  assert shapes["decoder/SubPixelUpsample_2/Conv_0/kernel"] == (3, 3, 4, 4 * outputs)


def test_conv_widths_per_image_side():
  assert vae_models.conv_widths((4, 8), (28, 28, 1)) == (4, 8)
  assert vae_models.conv_widths((4, 8), (32, 32, 3)) == (4, 8)
  assert vae_models.conv_widths((4, 8), (64, 64, 1)) == (4, 8, 16)
  for shape in ((48, 48, 3), (30, 30, 1), (64, 32, 3)):
    with pytest.raises(ValueError, match="conv VAE builds for square images of side 28, 32, 64"):
      vae_models.conv_widths((4, 8), shape)


@pytest.mark.slow
def test_conv_vae_trains_on_64_pixel_images():
  info = data_lib.DatasetInfo("x64", (64, 64, 3), 10, "x64", None)
  trainable = families.get("vae_conv").build(tiny_config("vae_conv"), info, total_steps=10)
  state = trainable.init(jax.random.PRNGKey(0))
  images = np.random.default_rng(0).uniform(0.0, 1.0, (2, 64, 64, 3)).astype(np.float32)
  state, metrics = jax.jit(trainable.train_step)(state, {"image": images, "label": np.zeros(2)})
  assert int(state.step) == 1
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
