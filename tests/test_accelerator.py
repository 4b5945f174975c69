"""On a GPU or TPU: a train step of each family there equals the CPU step; bfloat16 runs there.

Run with `pytest -m accelerator` (or AIGC_JAX_TEST_ACCELERATOR=1 make test) where the default JAX
backend is a GPU or TPU; elsewhere these tests skip. The comparison is test_parallel's: SGD steps
(linear in the gradients) at float32 matmul precision, every leaf within `REL` of how far
training moved it.
"""

import jax
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax import families
from test_parallel import INFO, REL, assert_moved_alike, with_sgd

pytestmark = pytest.mark.accelerator
MODELS = ["vae_mlp", "vae_conv", "gan_mlp", "dcgan"]
BATCH = 16


def batch(config):
  rng = np.random.default_rng(0)
  rows = BATCH * families.get(config.model).batches_per_step(config)
  image = rng.uniform(-1 if config.scale == "minus_one_one" else 0, 1, (rows, 28, 28, 1))
  return {"image": image.astype(np.float32), "label": np.arange(rows) % 10}


def steps_on(device, model, steps=2, **overrides):
  """(initial state, state after `steps` SGD steps) of `model` computed on `device`, on the host."""
  config = config_lib.validate(config_lib.get_config(model, batch_size=BATCH, **overrides))
  trainable = families.get(model).build(config, INFO, 100)
  init = with_sgd(trainable.init(jax.random.PRNGKey(0)), config.learning_rate)
  state, data = jax.device_put((init, batch(config)), device)
  step = jax.jit(trainable.train_step)
  with jax.default_matmul_precision("float32"):
    for _ in range(steps):
      state, _ = step(state, data)
  return jax.device_get(init), jax.device_get(state)


@pytest.mark.parametrize("model", MODELS)
def test_accelerator_step_equals_cpu_step(model):
  init, want = steps_on(jax.devices("cpu")[0], model)
  _, got = steps_on(jax.devices()[0], model)
  assert_moved_alike(got, want, init, REL)


@pytest.mark.parametrize("model", MODELS)
def test_bfloat16_step_runs_on_the_accelerator(model):
  _, state = steps_on(jax.devices()[0], model, compute_dtype="bfloat16")
  for leaf in jax.tree_util.tree_leaves(state):
    assert np.all(np.isfinite(leaf)) if np.issubdtype(leaf.dtype, np.floating) else True


@pytest.mark.skipif(jax.device_count() < 2, reason="needs two accelerator devices")
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_two_devices_equal_one(mode):
  from test_parallel import train  # pylint: disable=g-import-not-at-top
  init, want, _ = train("dcgan", (), "none", 2, "sgd")
  _, got, _ = train("dcgan", (), mode, 2, "sgd")
  assert_moved_alike(got, want, init)
