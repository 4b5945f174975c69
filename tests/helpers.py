"""What the tests, the fault scripts and the multi-host worker share: tiny IDX data, the small
training config, a saved config.json's text, reading a run's outputs back, and cheap variables
for the models' tests."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import config as config_lib


def write_idx(path, array):
  """`array` as a uint8 IDX file."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with open(path, "wb") as f:
    f.write(header + array.tobytes())


def write_blobs(directory, train: int = 256, test: int = 64) -> str:
  """`train` / `test` 28x28 IDX images in `directory`: blobs whose brightness depends on the
  label (a set a small VAE learns in a few steps)."""
  rng = np.random.default_rng(0)
  for prefix, n in (("train", train), ("t10k", test)):
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[:28, :28]
    blob = np.exp(-((yy - 14)**2 + (xx - 14)**2) / 40.0)
    images = (blob[None] * (25 * labels[:, None, None] + 20) + rng.uniform(0, 10, (n, 28, 28)))
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte"), np.clip(images, 0, 255))
    write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"), labels)
  return str(directory)


# Adam whose step on a ~0 gradient is ~0 instead of a +-learning-rate step of random sign, so that
# two differently compiled programs (other fusions, summation orders, device counts) that train
# the same model stay within rounding of each other on any CPU.
STEADY_ADAM = {"adam_eps": 1e-3}


def small_config(idx_dir, **overrides):
  """A small MLP VAE on `idx_dir` for 16 steps (evaluated at 8 and 16), with `overrides`."""
  values = dict(idx_dir=idx_dir, hidden_dim=32, latent_dim=4, batch_size=32, eval_batch_size=50,
                num_train_steps=16, log_every_steps=4, eval_every_steps=8, steps_per_call=4,
                progress_bar=False, num_sample_images=16, eval_iwae_samples=20,
                eval_iwae_examples=10)
  values.update(overrides)
  return config_lib.get_config("vae_mlp", **values)


def saved_config(**changes):
  """The text of a vae_mlp run's config.json, with `changes` (any JSON values) made to it."""
  values = config_lib.get_config("vae_mlp").to_dict()
  values.update(changes)
  return json.dumps(values)


def arrays(state):
  """Each player's params, optimizer state and model state (its optimizer left out)."""
  return {name: (p.params, p.opt_state, p.model_state) for name, p in state.players.items()}


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def key(seed=0):
  # rbg keys: flax's init compiles ~3x faster than with threefry keys on CPU (the models do not
  # depend on the key's implementation).
  return jax.random.key(seed, impl="unsafe_rbg")


def numpy_variables(model, *args, seed=0, **kwargs):
  """Variables of init's structure drawn with numpy: compiling init costs more than the tests.

  Kernels and embeddings ~ N(0, 1 / fan_in); biases and BatchNorm means 0; scales, variances
  and spectral-norm sigmas 1; spectral-norm u ~ N(0, 1).
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda *a: model.init(key(), *a, **kwargs), *args)

  def fill(path, leaf):
    name = str(path[-1].key)
    if name in ("bias", "mean") or name.endswith("/bias"):
      value = np.zeros(leaf.shape)
    elif name in ("scale", "var") or name.endswith("/sigma"):
      value = np.ones(leaf.shape)
    else:
      fan_in = math.prod(leaf.shape[:-1]) if name != "embedding" else 1
      value = rng.normal(size=leaf.shape) / math.sqrt(fan_in)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def top_singular_value(w):
  """The largest singular value of `w` viewed as a matrix (all axes but the last, by the last)."""
  w = np.asarray(w, np.float64)
  return float(np.linalg.svd(w.reshape(-1, w.shape[-1]), compute_uv=False)[0])
