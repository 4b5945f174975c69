"""One per-device step under jit, pmap and shard_map: the same numbers on 1 and on 4 devices."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel

INFO = data_lib.DATASETS["fashion_mnist"]
BATCH = 16


def synthetic_data(n=64):
  rng = np.random.default_rng(0)
  return data_lib.DeviceData(jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)),
                             jnp.asarray(rng.integers(0, 10, (n,), dtype=np.int32)))


def train(model, mode, steps=3, **overrides):
  """(single-copy state, metric sums) after `steps` steps of `model` in parallel `mode`."""
  config = config_lib.validate(config_lib.get_config(model, batch_size=BATCH, **overrides))
  trainable = families.get(model).build(config, INFO, 100)
  loop = parallel.make_train_loop(trainable.train_step, batch_size=BATCH, scale=config.scale,
                                  binarize=config.binarize, steps_per_call=config.steps_per_call,
                                  mode=mode,
                                  batches_per_step=families.get(model).batches_per_step(config))
  state = loop.put_state(trainable.init(jax.random.PRNGKey(0)))
  data = loop.put_data(synthetic_data())
  perm = loop.put_data(data_lib.epoch_permutation(0, 0, 64))
  state, sums = loop(state, data, perm, 0, steps)
  return jax.device_get(loop.get_state(state)), jax.device_get(sums)


# Biases that a training-mode BatchNorm cancels right away (it subtracts the batch mean): their
# exact gradient is 0, so what they get is rounding noise, which Adam turns into +-lr steps.
G_BIASES_BEFORE_BATCHNORM = (  # the DCGAN generator's dense layer and first upsampling conv
    r"^\.(g_params|g_opt_state.*|ema_params)\['(Dense_0|up_0'\]\['Conv_0)'\]\['bias'\]$",)
D_BIAS_BEFORE_BATCHNORM = (  # the DCGAN discriminator's second conv (and the running mean of
    r"^\.(d_params|d_opt_state.*)\['Conv_1'\]\['bias'\]$",  # its BatchNorm, which adds it)
    r"^\.d_stats\['BatchNorm_0'\]\['mean'\]$")


def assert_trees_close(got, want, rtol=1e-5, atol=1e-6, outliers=0, outlier_atol=0.0, skip=()):
  """Leaf by leaf allclose; max(`outliers`, 0.01%) of a leaf's elements may be off by <= `outlier_atol`.

  Why outliers: the per-device and single-device gradients differ by float32 summation order
  (~1e-7 relative). Where a gradient is itself rounding noise (it is ~0), Adam divides it by its
  own magnitude and makes a full +-learning_rate step of random sign, so a handful of such
  parameters (10 of the DCGAN generator's 627,200 dense weights here) differ by up to
  2 x steps x learning_rate. A wrong mean, a missed device or a wrong noise slice moves far more.
  """
  got_leaves = jax.tree_util.tree_leaves_with_path(got)
  want_leaves = jax.tree_util.tree_leaves(want)
  assert len(got_leaves) == len(want_leaves)
  for (path, g), w in zip(got_leaves, want_leaves):
    if any(re.match(pattern, jax.tree_util.keystr(path)) for pattern in skip):
      continue
    g, w = np.asarray(g), np.asarray(w)
    off = ~np.isclose(g, w, rtol=rtol, atol=atol)
    if off.sum() <= max(outliers, g.size // 10_000) and np.all(np.abs(g - w)[off] <= outlier_atol):
      continue
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_four_fake_devices():
  assert jax.device_count() == 4  # conftest asks for them before JAX starts


CASES = [  # (model, config overrides, steps, rtol)
    ("vae_mlp", dict(binarize=True, steps_per_call=2), 3, 1e-5),  # fori_loop, binarization noise
    ("vae_conv", dict(), 3, 1e-5),
    # One step: IWAE weights are exp(log-likelihoods of ~-500 nats), so float32 rounding of the
    # batch-4 and batch-16 convolutions (~1e-7 relative) becomes ~1e-5 in the gradients, which
    # Adam then amplifies where gradients are ~0.
    ("vae_conv", dict(iwae_samples=2), 1, 1e-4),  # latent noise sliced on axis 1 of (S, B, D)
    ("dcgan", dict(), 3, 1e-5),  # BatchNorm in G and D
    ("dcgan", dict(gan_loss="wasserstein", gp_weight=10.0, spectral_norm=True, conditional=True),
     3, 1e-5),
    ("dcgan", dict(n_critic=2), 1, 1e-5),
]


@pytest.mark.parametrize("model,overrides,steps,rtol", CASES,
                         ids=[f"{m}-{i}" for i, (m, *_) in enumerate(CASES)])
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_data_parallel_equals_single_device(model, overrides, steps, rtol, mode):
  want_state, want_sums = train(model, "none", steps, **overrides)
  got_state, got_sums = train(model, mode, steps, **overrides)
  assert int(got_state.step) == int(want_state.step) == steps
  lr = config_lib.get_config(model, **overrides).learning_rate
  skip = ()
  if model == "dcgan":
    skip = G_BIASES_BEFORE_BATCHNORM + (() if "spectral_norm" in overrides else D_BIAS_BEFORE_BATCHNORM)
  # params, optimizer moments, BatchNorm statistics, spectral-norm vectors, EMA, rng
  assert_trees_close(got_state, want_state, rtol=rtol, outliers=16, outlier_atol=2 * steps * lr,
                     skip=skip)
  assert_trees_close(got_sums, want_sums, rtol=10 * rtol)


def test_batch_not_divisible_by_devices_is_a_clear_error():
  with pytest.raises(ValueError, match="batch_size 18 is not divisible by the 4 devices"):
    parallel.make_train_loop(lambda s, b, axis_name=None: (s, {}), batch_size=18, mode="pmap")


def test_pmap_on_one_device_runs_and_says_so(caplog):
  caplog.set_level("INFO", logger="aigc_jax.parallel")
  loop = parallel.make_train_loop(lambda s, b, axis_name=None: (s, {}), batch_size=8,
                                  mode="pmap", devices=jax.devices()[:1])
  assert loop.num_devices == 1
  assert "single device" in caplog.text
