"""One per-device step under jit, pmap and shard_map: the same numbers on 1 and on 4 devices.

The single-device and the data-parallel steps add the same float32 terms in different orders
(one sum over the batch, or four partial sums and a mean), so their gradients differ by
rounding, by an amount that depends on the CPU's instruction set. How close is close, then:

- With SGD the update is linear in the gradient, so rounding stays rounding: after several
  steps every leaf of the state lies within `REL` of how far training moved it (L2 norms).
- With Adam a gradient that is ~0 (rounding noise) still gets a full +-learning-rate step of
  random sign, so Adam is compared one step at a time: its moments (linear in the gradients) as
  above, and its steps exactly where the gradient is not ~0.
- A planted bug (a missing `pmean`, BatchNorm statistics not averaged, the same noise on every
  device, every device reading device 0's rows) moves the state by a sizeable fraction of its
  training change and fails both checks: `test_parity_checks_catch_planted_bugs`.

Matmuls run at float32 precision (`jax.default_matmul_precision`), so on GPUs and TPUs, too,
what differs is float32 rounding.
"""

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import STEADY_ADAM
from helpers import arrays
from helpers import small_config

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax import train as train_lib
from aigc_jax import workdir as workdir_lib
from aigc_jax.families import gan_step

INFO = data_lib.DATASETS["fashion_mnist"]
BATCH = 16
ROWS = 128  # 3 steps of 2 batches (n_critic=2) of 16 rows: no step reads past the data
# Float32 rounding stays far below REL and every planted bug far above it: docs/parity.md has
# the measured margins (tests/parity_margins.py prints them).
REL = 2e-2
NOT_ZERO = 1e-2  # a gradient within 1% of its leaf's largest is not rounding noise

# Leaves whose exact gradient is 0, so that what they get is rounding noise: biases that a
# training-mode BatchNorm cancels (it subtracts the batch mean), the running mean of the
# BatchNorm that adds such a bias, the Wasserstein critic's output bias (it cancels between
# the real and fake means) and the attention's key bias (it shifts a query's every logit alike,
# which the softmax cancels).
ZERO_GRADIENT_LEAVES = (r"^(players/unet/(params|opt_state.*)|ema_params)/params/Attention_0/"
                        r"MultiHeadDotProductAttention_0/key/bias$",
                        r"^(players/g/(params|opt_state.*)|ema_params)/(Dense_0|up_0/Conv_0)/bias$",
                        r"^players/d/(params|opt_state.*)/Conv_1/bias$",
                        r"^players/d/model_state/BatchNorm_0/mean$",
                        r"^players/d/(params|opt_state.*)/logit/bias$")


def synthetic_data(n=ROWS):
  rng = np.random.default_rng(0)
  return data_lib.DeviceData(jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)),
                             jnp.asarray(rng.integers(0, 10, (n,), dtype=np.int32)))


def with_sgd(state, learning_rate):
  """`state` with plain SGD in place of each player's Adam: updates linear in the gradients."""
  tx = optax.sgd(learning_rate)
  return state.replace(
      players={
          name: player.replace(tx=tx, opt_state=tx.init(player.params))
          for name, player in state.players.items()
      })


def train(model, overrides, mode, steps, optimizer, wrap_step=lambda step: step):
  """(initial state, state after `steps` steps, metric sums): single copies, on the host."""
  config = config_lib.validate(config_lib.get_config(model, batch_size=BATCH, **dict(overrides)))
  trainable = families.get(model).build(config, INFO, 100)
  loop = parallel.make_train_loop(wrap_step(trainable.train_step), batch_size=BATCH,
                                  scale=config.scale, binarize=config.binarize,
                                  steps_per_call=config.steps_per_call, mode=mode,
                                  batches_per_step=families.get(model).batches_per_step(config))
  init = trainable.init(jax.random.PRNGKey(0))
  if optimizer == "sgd":
    init = with_sgd(init, config.learning_rate)
  with jax.default_matmul_precision("float32"):
    state = loop.place.put_state(init)
    data = loop.place.put_data(synthetic_data())
    perm = loop.place.put_state(data_lib.epoch_permutation(0, 0, ROWS))
    state, sums = loop(state, data, perm, 0, steps)
  return jax.device_get(init), jax.device_get(loop.place.get_state(state)), jax.device_get(sums)


single_device = functools.cache(functools.partial(train, mode="none"))


def path_name(path) -> str:
  """A key path as 'players/g/params/Dense_0/bias' (attributes, dict keys and indices alike)."""
  return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def float_leaves(*trees, skip=ZERO_GRADIENT_LEAVES):
  """(path, leaf of each tree as float64) for the leaves of `trees[0]` not matched by `skip`."""
  paths = jax.tree_util.tree_leaves_with_path(trees[0])
  for (path, _), *leaves in zip(paths, *map(jax.tree_util.tree_leaves, trees)):
    key = path_name(path)
    if not any(re.match(pattern, key) for pattern in skip):
      yield key, [np.asarray(x, np.float64) for x in leaves]


def assert_moved_alike(got, want, init, rel=REL):
  """Every leaf of `got` is within `rel` of how far `want` moved from `init` (L2 norms); leaves
  training does not move (step counts, rngs, untouched parameters) are equal."""
  for key, (g, w, i) in float_leaves(got, want, init):
    moved = np.linalg.norm(w - i)
    assert np.linalg.norm(g - w) <= rel * moved, (
        f"{key}: off by {np.linalg.norm(g - w):.3g}, {rel} x its training change {moved:.3g}")


def adam_moments(opt_state):
  (adam,) = [
      s for s in jax.tree_util.tree_leaves(opt_state,
                                           is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
      if isinstance(s, optax.ScaleByAdamState)
  ]
  return adam.mu, adam.nu


def as_tree(player_name: str, field: str, value):
  """`value` at the path it has in a state: players/NAME/FIELD."""
  return {"players": {player_name: {field: value}}}


def adam_trees(got, want, init):
  """Per player: its Adam moments in (got, want, init), then its params in (got, want) and want's
  first moment; each at its path in the state (players/NAME/...)."""
  for name in want.players:
    yield (tuple(
        as_tree(name, "opt_state", adam_moments(s.players[name].opt_state))
        for s in (got, want, init)), (as_tree(name, "params", got.players[name].params),
                                      as_tree(name, "params", want.players[name].params),
                                      as_tree(name, "params",
                                              adam_moments(want.players[name].opt_state)[0])))


def assert_adam_steps_agree(got, want, init, learning_rate, rel=REL, not_zero=NOT_ZERO):
  """After an Adam step: the moments agree as `assert_moved_alike` asks, and every parameter
  whose first moment is not ~0 (> `not_zero` of its leaf's largest) took the same step (same
  sign, size within 10% of the learning rate)."""
  for moments, params in adam_trees(got, want, init):
    assert_moved_alike(*moments, rel)
    for key, (g, w, m) in float_leaves(*params):
      sure = np.abs(m) > not_zero * np.abs(m).max()
      off = np.abs(g - w)[sure]
      assert off.size == 0 or off.max() <= 0.1 * learning_rate, (  # a flipped step is off by 2
          f"{key}: {np.sum(off > 0.1 * learning_rate)} of {off.size} Adam steps differ")


def test_four_fake_devices():
  assert jax.device_count() == 4  # conftest asks for them before JAX starts


CASES = [  # (model, config overrides, steps)
    ("vae_mlp", (("binarize", True), ("steps_per_call", 2)), 3),  # fori_loop, binarization noise
    ("vae_conv", (), 3),
    ("vae_conv", (("iwae_samples", 2),), 3),  # latent noise sliced on axis 1 of (S, B, D)
    ("dcgan", (), 3),  # BatchNorm in G and D
    ("dcgan", (("gan_loss", "wasserstein"), ("gp_weight", 10.0), ("spectral_norm", True),
               ("conditional", True)), 3),
    ("dcgan", (("n_critic", 2),), 3),  # two real batches per step
    ("unet", (("base_features", 16), ("multipliers", (1, 2)), ("patch", 2), ("attention_heads", 2),
              ("conditional", True), ("objective", "v")), 3),  # times, noise, dropped labels
]
IDS = [f"{m}-{i}" for i, (m, *_) in enumerate(CASES)]


@pytest.mark.parametrize("model,overrides,steps", CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
@pytest.mark.slow
def test_data_parallel_equals_single_device(model, overrides, steps, mode):
  """SGD steps: params, BatchNorm statistics, spectral-norm vectors, EMA, rng and metrics."""
  init, want, want_sums = single_device(model, overrides, steps=steps, optimizer="sgd")
  _, got, got_sums = train(model, overrides, mode, steps, "sgd")
  assert int(got.step) == int(want.step) == steps
  assert_moved_alike(got, want, init)
  chex.assert_trees_all_close(got_sums, want_sums, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model,overrides,steps", CASES, ids=IDS)
@pytest.mark.slow
def test_data_parallel_adam_step_equals_single_device(model, overrides, steps):
  del steps
  init, want, want_sums = single_device(model, overrides, steps=1, optimizer="adam")
  _, got, got_sums = train(model, overrides, "pmap", 1, "adam")
  learning_rate = config_lib.get_config(model).learning_rate
  assert_adam_steps_agree(got, want, init, learning_rate)
  chex.assert_trees_all_close(got_sums, want_sums, rtol=1e-4, atol=1e-5)


def every_device_reads_device_0s_rows(step):

  def wrapped(state, batch, axis_name=None):
    batch = jax.tree_util.tree_map(lambda x: jax.lax.all_gather(x, axis_name)[0], batch)
    return step(state, batch, axis_name=axis_name)

  return wrapped


def plant(bug, monkeypatch):
  """Breaks the data-parallel step as `bug` says; returns the train-step wrapper it needs."""
  if bug == "missing_pmean":
    monkeypatch.setattr(jax.lax, "pmean", lambda x, axis_name, **kwargs: x)
  elif bug == "batchnorm_not_averaged":
    batch_norm = nn.BatchNorm
    monkeypatch.setattr(nn, "BatchNorm", lambda *a, axis_name=None, **kw: batch_norm(*a, **kw))
  elif bug == "same_noise_on_every_device":
    monkeypatch.setattr(gan_step, "batch_noise",
                        lambda sampler, rng, shape, axis_name=None: sampler(rng, tuple(shape)))
  elif bug == "device_0s_rows":
    return every_device_reads_device_0s_rows
  return lambda step: step


@pytest.mark.parametrize(
    "bug",
    ["missing_pmean", "batchnorm_not_averaged", "same_noise_on_every_device", "device_0s_rows"])
@pytest.mark.slow
def test_parity_checks_catch_planted_bugs(bug, monkeypatch):
  wrap_step = plant(bug, monkeypatch)
  init, want, _ = single_device("dcgan", (), steps=3, optimizer="sgd")
  _, got, _ = train("dcgan", (), "pmap", 3, "sgd", wrap_step)
  with pytest.raises(AssertionError, match="training change"):
    assert_moved_alike(got, want, init)
  init, want, _ = single_device("dcgan", (), steps=1, optimizer="adam")
  _, got, _ = train("dcgan", (), "pmap", 1, "adam", wrap_step)
  with pytest.raises(AssertionError):
    assert_adam_steps_agree(got, want, init, config_lib.get_config("dcgan").learning_rate)


def test_batch_not_divisible_by_devices_is_a_clear_error():
  with pytest.raises(ValueError, match="batch_size 18 is not divisible by the 4 devices"):
    parallel.make_train_loop(lambda s, b, axis_name=None: (s, {}), batch_size=18, mode="pmap")


def test_pmap_on_one_device_runs_and_says_so(caplog):
  caplog.set_level("INFO", logger="aigc_jax.parallel")
  loop = parallel.make_train_loop(lambda s, b, axis_name=None: (s, {}), batch_size=8, mode="pmap",
                                  devices=jax.devices()[:1])
  assert loop.place.num_devices == 1
  assert "single device" in caplog.text


def gathered_batches(mode, data, start, batches_per_step=2, batch=16):
  """(every device's batch of step `start`, stacked on a leading device axis; the placed data)."""

  def step(state, b, axis_name=None):
    gather = (lambda x: x[None]) if axis_name is None else (
        lambda x: jax.lax.all_gather(x, axis_name))
    return state, jax.tree_util.tree_map(gather, b)

  loop = parallel.make_train_loop(step, batch_size=batch, mode=mode,
                                  batches_per_step=batches_per_step)
  placed = loop.place.put_data(data)
  perm = loop.place.put_state(data_lib.epoch_permutation(0, 0, len(data.labels)))
  _, got = loop(loop.place.put_state({"step": jnp.int32(0)}), placed, perm, start, 1)
  return jax.device_get(got), placed


@pytest.mark.parametrize("mode", ["none", "pmap", "shard_map"])
def test_rows_split_over_devices_give_each_device_its_rows_exactly(mode):
  rows, batch, n, start = 130, 16, 2, 3  # 130 rows: the last device's block is padded
  data = synthetic_data(rows)
  got, placed = gathered_batches(mode, data, start, n, batch)
  devices = 1 if mode == "none" else 4
  perm = np.asarray(data_lib.epoch_permutation(0, 0, rows))
  index = perm[(start * n) * batch:(start * n + n) * batch].reshape(n, devices, -1)
  index = index.swapaxes(0, 1).reshape(devices, -1)  # device d: its rows of batch 0, then 1
  np.testing.assert_array_equal(got["label"], np.asarray(data.labels)[index])
  want = jax.jit(data_lib.preprocess)(np.asarray(data.images)[index])  # as XLA rounds it
  np.testing.assert_array_equal(got["image"], want)
  shards = placed.images.addressable_shards
  assert len(shards) == devices
  assert {s.data.size for s in shards} == {np.prod(placed.images.shape) // devices}
  assert sum(s.data.shape[-4] for s in shards) == (rows if mode == "none" else 132)


@pytest.mark.slow
def test_auto_on_an_emulated_gpu_uses_every_device_and_trains_as_one_device(
    idx_dir, tmp_path, monkeypatch):
  loops, make = [], parallel.make_train_loop

  def recorded(*args, **kwargs):
    loops.append(make(*args, **kwargs))
    return loops[-1]

  monkeypatch.setattr(parallel, "make_train_loop", recorded)
  one = train_lib.train_and_evaluate(small_config(idx_dir, parallel="none", **STEADY_ADAM),
                                     str(tmp_path / "none"))
  monkeypatch.setenv("AIGC_JAX_PLATFORM_DEFAULTS", "gpu")
  auto = train_lib.train_and_evaluate(small_config(idx_dir, parallel="auto", **STEADY_ADAM),
                                      str(tmp_path / "auto"))
  modes = [(loop.place.mode, loop.place.num_devices) for loop in loops]
  assert modes == [("none", 1), (backend.AUTO_PARALLEL, 4)] and backend.AUTO_PARALLEL != "none"
  trained = [workdir_lib.load_trained(str(tmp_path / d), "latest").state for d in ("none", "auto")]
  assert int(trained[0].step) == int(trained[1].step) == 16
  chex.assert_trees_all_close(arrays(trained[1]), arrays(trained[0]), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(auto, one, rtol=1e-4)
