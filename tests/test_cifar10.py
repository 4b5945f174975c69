"""CIFAR-10 (32x32x3): the experiment presets end to end on mock data, the discretized logistic
likelihood against closed forms, and the missing-data error's fix text."""

import dataclasses
import importlib.util
import json
import math
import os
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import likelihoods
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.metrics import classifier as clf_lib

tfds = pytest.importorskip("tensorflow_datasets")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 128  # per mock split: one batch of the feature classifier's recipe
SHAPE = (32, 32, 3)


def experiment_config(name):
  """get_config() of experiments/NAME.py."""
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"experiments.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


SHRINK = dict(batch_size=16, eval_batch_size=64, num_train_steps=4, log_every_steps=2,
              eval_every_steps=4, checkpoint_every_steps=4, steps_per_call=1, num_sample_images=4,
              progress_bar=False)
SHRINK_VAE = dict(latent_dim=4, hidden_dim=16, conv_features=(4, 8))
SHRINK_GAN = dict(latent_dim=8, d_base_features=4, g_base_features=8, eval_num_samples=32)


@pytest.fixture(name="metrics_cache", scope="module")
def fixture_metrics_cache(tmp_path_factory):
  """A metrics cache for this module: the first GAN evaluation trains the CIFAR-10 feature
  classifier (the real recipe, on the mock train split) into it, the second loads it."""
  return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(name="mock_cifar10")
def fixture_mock_cifar10(tmp_path, monkeypatch, metrics_cache):
  """Random CIFAR-10-shaped TFDS splits; no IDX directory, no network."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"test tried to open a network connection: {args}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.delenv(data_lib.IDX_DIR_ENV, raising=False)
  monkeypatch.setenv(clf_lib.CACHE_ENV, metrics_cache)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
    yield str(tmp_path / "tfds")


@pytest.mark.slow
@pytest.mark.parametrize("name,shrink", [("dcgan_cifar10", SHRINK_GAN),
                                         ("sngan_hinge_cifar10", SHRINK_GAN),
                                         ("vae_conv_cifar10", SHRINK_VAE)])
def test_experiment_trains_end_to_end_on_mock_cifar10(name, shrink, mock_cifar10, tmp_path):
  config = experiment_config(name)
  assert config.dataset == "cifar10"
  config.update(dict(SHRINK, **shrink, tfds_data_dir=mock_cifar10))
  workdir = str(tmp_path / name)
  metrics = train.train_and_evaluate(config, workdir)
  assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] == "train"] == [2, 4]
  assert [r["step"] for r in records if r["split"] == "test"] == [4]
  assert os.path.exists(os.path.join(workdir, "samples", "samples_0000004.png"))
  run = workdir_lib.load_trained(workdir, "latest")
  assert run.step == 4 and run.info.image_shape == SHAPE
  images, _ = run.trainable.sample(run.state, jax.random.PRNGKey(0), 6)
  assert images.shape == (6, *SHAPE)
  assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@pytest.mark.parametrize("name,shrink", [("dcgan_cifar10", SHRINK_GAN),
                                         ("sngan_hinge_cifar10", SHRINK_GAN),
                                         ("vae_conv_cifar10", SHRINK_VAE)])
def test_experiment_trains_under_accelerator_defaults(name, shrink, platform, mock_cifar10,
                                                      tmp_path, monkeypatch):
  """A GPU's or TPU's choices on the suite's 4 CPU devices: every step in one call, shard_map."""
  monkeypatch.setenv(backend.PLATFORM_ENV, platform)
  config = experiment_config(name)
  config.update(
      dict(SHRINK, **shrink, tfds_data_dir=mock_cifar10, steps_per_call=0, parallel="auto",
           log_every_steps=4))
  workdir = str(tmp_path / name)
  metrics = train.train_and_evaluate(config, workdir)
  assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
  assert backend.steps_per_call(config.steps_per_call) == backend.AUTO_STEPS_PER_CALL
  assert backend.parallel_mode(config.parallel) == backend.AUTO_PARALLEL
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] in ("train", "test")] == [4, 4]
  assert workdir_lib.load_trained(workdir, "latest").step == 4


def test_vae_conv_cifar10_decoder_outputs_mean_and_log_scale_per_channel():
  config = experiment_config("vae_conv_cifar10")
  config.update(SHRINK_VAE)
  assert config.likelihood == "discretized_logistic" and config.scale == "zero_one"
  config_lib.validate(config)
  model = families.get("vae_conv").build_model(config, data_lib.DATASETS["cifar10"])
  x = jax.ShapeDtypeStruct((2, *SHAPE), jnp.float32)
  rng = jax.random.PRNGKey(0)
  params = jax.eval_shape(model.init, rng, x, rng)
  out, mean, _, z = jax.eval_shape(lambda p, x: model.apply(p, x, rng, num_samples=3), params, x)
  assert out.shape == (3, 2, 32, 32, 6)  # 3 means, then 3 log-scales, per pixel
  assert mean.shape == (2, 4) and z.shape == (3, 2, 4)
  decoded = jax.eval_shape(lambda p: model.apply(p, jnp.zeros((5, 4)), method="decode"), params)
  assert decoded.shape == (5, 32, 32, 6)


# ------------------------------------------------------------ the likelihood


def logistic_cdf(t, mean, scale):
  return 1.0 / (1.0 + math.exp(-(t - mean) / scale))


@pytest.mark.parametrize("mean,log_scale", [(0.3, -3.0), (0.0, 0.0), (1.2, -6.0), (0.5, -12.0),
                                            (-3.0, 2.0), (0.9, -8.0)])
def test_discretized_logistic_probabilities_of_all_bins_sum_to_one(mean, log_scale):
  x = (jnp.arange(256.0) / 255.0).reshape(256, 1, 1, 1)  # every intensity level as an image
  log_p = likelihoods.discretized_logistic_log_likelihood(jnp.float32(mean), jnp.float32(log_scale),
                                                          x)
  assert log_p.shape == (256,) and bool(jnp.all(log_p <= 0))
  np.testing.assert_allclose(float(jnp.exp(jax.nn.logsumexp(log_p))), 1.0, rtol=1e-5)


def test_discretized_logistic_matches_cdf_differences_by_hand():
  mean, scale = 0.4, 0.05
  k = np.array([0, 1, 102, 200, 254, 255])
  x = jnp.asarray(k / 255.0, jnp.float32).reshape(1, 1, 6, 1)
  got = likelihoods.discretized_logistic_log_likelihood(jnp.full(x.shape, mean),
                                                        jnp.full(x.shape, math.log(scale)), x)
  per_bin = []
  for level in k:
    upper = 1.0 if level == 255 else logistic_cdf((level + 0.5) / 255, mean, scale)
    lower = 0.0 if level == 0 else logistic_cdf((level - 0.5) / 255, mean, scale)
    per_bin.append(math.log(upper - lower))
  np.testing.assert_allclose(got, [sum(per_bin)], rtol=1e-5)
  single = likelihoods.discretized_logistic_log_likelihood(jnp.float32(mean),
                                                           jnp.float32(math.log(scale)),
                                                           x[..., 2:3, :], event_ndim=3)
  np.testing.assert_allclose(single, [per_bin[2]], rtol=1e-5)


def test_discretized_logistic_is_finite_with_finite_gradients_in_the_tails():
  """Narrow logistics far from the pixel (where sigmoid differences round to 0) and edge bins."""
  x = jnp.array([0.0, 1.0, 0.5, 0.5]).reshape(1, 1, 4, 1)
  mean = jnp.array([0.9, 0.1, 0.0, 1.0]).reshape(x.shape)
  log_scale = jnp.full(x.shape, -9.0)
  value, grads = jax.value_and_grad(
      lambda m, s: jnp.sum(likelihoods.discretized_logistic_log_likelihood(m, s, x)),
      argnums=(0, 1))(mean, log_scale)
  assert np.isfinite(float(value)) and float(value) < -1e3
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
  # Pulling each mean towards its pixel raises the likelihood: d/dmean has the sign of x - mean.
  np.testing.assert_array_equal(np.sign(grads[0]).ravel(), np.sign(x - mean).ravel())


def test_discretized_logistic_snaps_off_grid_values_to_the_nearest_level():
  x = jnp.array([100 / 255, 100.4 / 255, 99.6 / 255]).reshape(3, 1, 1, 1)
  log_p = likelihoods.discretized_logistic_log_likelihood(jnp.float32(0.3), jnp.float32(-4.0), x)
  np.testing.assert_allclose(log_p[1:], [log_p[0], log_p[0]], rtol=1e-6)


def test_bernoulli_stays_the_default_likelihood_with_one_decoder_channel():
  config = config_lib.get_config("vae_conv")
  assert config.likelihood == "bernoulli"
  model = families.get("vae_conv").build_model(config, data_lib.DATASETS["cifar10"])
  assert model.decoder.image_shape == SHAPE


def test_unknown_likelihood_suggests_the_closest_choice():
  config = config_lib.get_config("vae_conv", likelihood="discretised_logistic")
  with pytest.raises(
      config_lib.ConfigError, match=r"likelihood 'discretised_logistic' is unknown; did you mean "
      r"'discretized_logistic'\?.*bernoulli"):
    config_lib.validate(config)


# ------------------------------------------------------------ missing data


def test_missing_cifar10_names_tfds_fixes_not_the_fashion_mnist_package(monkeypatch):

  def fail(*args, **kwargs):
    raise OSError("no network")

  monkeypatch.delenv(data_lib.IDX_DIR_ENV, raising=False)
  monkeypatch.setattr(tfds, "data_source", fail)
  with pytest.raises(data_lib.DataError) as error:
    data_lib.load_split("cifar10", "train")
  message = str(error.value)
  assert "dataset 'cifar10'" in message and "TFDS 'cifar10'" in message and "no network" in message
  assert "fashion" not in message and "apt-get" not in message and "idx_dir" not in message
  assert "--config.tfds_data_dir" in message and "tfds_data_dir" in config_lib.base_config()
  assert "network access" in message


def test_missing_fashion_mnist_still_names_its_debian_package(tmp_path, monkeypatch):

  def fail(*args, **kwargs):
    raise OSError("no network")

  monkeypatch.delenv(data_lib.IDX_DIR_ENV, raising=False)
  monkeypatch.setattr(tfds, "data_source", fail)
  info = data_lib.DATASETS["fashion_mnist"]
  monkeypatch.setitem(data_lib.DATASETS, "fashion_mnist",
                      dataclasses.replace(info, debian_dir=str(tmp_path)))
  with pytest.raises(
      data_lib.DataError, match=r"apt-get install dataset-fashion-mnist.*"
      r"--config.idx_dir.*--config.tfds_data_dir"):
    data_lib.load_split("fashion_mnist", "test")
