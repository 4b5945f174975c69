"""The GAN family's train step: separation of the two updates, EMA, every loss and variant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import STEADY_ADAM
from helpers import write_idx

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax.families import gan_step

INFO = data_lib.DATASETS["fashion_mnist"]


def make(model="gan_mlp", **overrides):
  config = config_lib.validate(config_lib.get_config(model, **overrides))
  trainable = families.get(model).build(config, INFO)
  return trainable, trainable.init(jax.random.PRNGKey(0))


def batch(size=8):
  x = jax.random.uniform(jax.random.PRNGKey(5), (size, 28, 28, 1), minval=-1, maxval=1)
  return {"image": x, "label": jnp.arange(size) % 10}


def max_change(a, b):
  return max(
      float(jnp.max(jnp.abs(x - y)))
      for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.slow
def test_discriminator_update_leaves_generator_alone_and_vice_versa():
  trainable, state = make(learning_rate=1e-30, d_learning_rate=1e-3)  # G frozen, D learns
  new, _ = jax.jit(trainable.train_step)(state, batch())
  assert max_change(new.players["g"].params, state.players["g"].params) < 1e-20
  assert max_change(new.players["d"].params, state.players["d"].params) > 1e-4
  trainable, state = make(learning_rate=1e-3, d_learning_rate=1e-30)  # D frozen, G learns
  new, _ = jax.jit(trainable.train_step)(state, batch())
  assert max_change(new.players["d"].params, state.players["d"].params) < 1e-20
  assert max_change(new.players["g"].params, state.players["g"].params) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_cosine_schedule_reaches_zero_after_total_steps(schedule):
  """Over total_steps=1 the cosine learning rates are 0 from the second step on (G and D)."""
  config = config_lib.validate(config_lib.get_config("gan_mlp", lr_schedule=schedule))
  trainable = families.get("gan_mlp").build(config, INFO, total_steps=1)
  step = jax.jit(trainable.train_step)
  first, _ = step(trainable.init(jax.random.PRNGKey(0)), batch())
  second, _ = step(first, batch())
  moved = min(max_change(second.players[p].params, first.players[p].params) for p in "gd")
  assert (moved < 1e-9) if schedule == "cosine" else (moved > 1e-5)  # cos(pi) may be 1 ulp off


@pytest.mark.slow
@pytest.mark.parametrize("step,decay", [(0, 0.1), (5, 0.4), (1000, 0.9)])  # min(0.9, (1+t)/(10+t))
def test_ema_follows_the_formula_with_its_warm_up(step, decay):
  trainable, state = make(ema_decay=0.9)
  state = state.replace(step=jnp.asarray(step, jnp.int32))
  new, _ = jax.jit(trainable.train_step)(state, batch())
  expected = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params,
                                    new.players["g"].params)
  for got, want in zip(jax.tree_util.tree_leaves(new.ema_params),
                       jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("model,overrides", [
    ("gan_mlp", dict(gan_loss="minimax")),
    ("gan_mlp", dict(gan_loss="wasserstein", gp_weight=10.0, n_critic=2, spectral_norm=True)),
    ("dcgan", dict(gan_loss="hinge", spectral_norm=True, conditional=True, r1_gamma=1.0)),
    ("dcgan", dict(conditional=True, aux_classifier=True)),
    ("gan_mlp", dict(conditional=True, label_mode="concat")),
    ("dcgan", dict(gan_loss="wasserstein", gp_weight=10.0, d_batchnorm=False)),
    ("dcgan", dict(rotation_d_weight=1.0, rotation_g_weight=0.2, g_topk=0.5, cr_weight=10.0)),
])
@pytest.mark.slow
def test_variants_train_and_sample(model, overrides):
  trainable, state = make(model, **overrides)
  step = jax.jit(trainable.train_step)
  for _ in range(2):
    state, metrics = step(state, batch())
  assert int(state.step) == 2
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  if overrides.get("gp_weight"):
    assert "gp" in metrics
  images, labels = trainable.sample(state, jax.random.PRNGKey(1), 20)
  assert images.shape == (20, 28, 28, 1) and images.min() >= 0 and images.max() <= 1
  if overrides.get("conditional"):
    np.testing.assert_array_equal(labels, np.arange(20) % 10)


@pytest.mark.parametrize("label_mode,z_width", [("multiply", 100), ("concat", 200)])
def test_label_mode_reaches_the_generator(label_mode, z_width):
  """'concat' feeds [z, embed(y)] (twice z's width) to G's first layer; 'multiply' z * embed(y)."""
  _, state = make("dcgan", conditional=True, label_mode=label_mode)
  assert state.players["g"].params["Dense_0"]["kernel"].shape[0] == z_width


@pytest.mark.slow
def test_rotation_loss_teaches_d_the_rotations_and_g_weight_moves_only_g():
  """SS-GAN: D's rotation head learns the turns of a fixed real batch (G frozen); the G-side
  weight leaves D's update as without it and changes G's."""
  trainable, state = make("dcgan", rotation_d_weight=1.0, learning_rate=1e-30, d_learning_rate=1e-3)
  step = jax.jit(trainable.train_step)
  losses = []
  for _ in range(12):
    state, metrics = step(state, batch())
    losses.append(float(metrics["d_rotation_loss"]))
  assert abs(losses[0] - np.log(4)) < 0.5 and losses[-1] < 0.5 * losses[0], losses

  # adam_eps 1e-3: D's bias before its BatchNorm has an exact gradient of 0, and Adam would turn
  # the two programs' different rounding noise into +-lr steps (helpers.STEADY_ADAM)
  d_only, state0 = make("dcgan", rotation_d_weight=1.0, **STEADY_ADAM)
  both, state1 = make("dcgan", rotation_d_weight=1.0, rotation_g_weight=1.0, **STEADY_ADAM)
  new0, m0 = jax.jit(d_only.train_step)(state0, batch())
  new1, m1 = jax.jit(both.train_step)(state1, batch())
  assert "g_rotation_loss" in m1 and "g_rotation_loss" not in m0
  assert max_change(new1.players["d"].params, new0.players["d"].params) < 1e-6
  assert max_change(new1.players["g"].params, new0.players["g"].params) > 1e-5


@pytest.mark.slow
def test_mode_seeking_weight_moves_only_g():
  """The mode-seeking term is G's alone: D's update is as without it, G's differs, and its value
  is reported."""
  results, paired = [], {**batch(), "label": jnp.arange(8) % 3}  # pairs share a label
  for weight in (0.0, 1.0):
    trainable, state = make("dcgan", conditional=True, mode_seeking_weight=weight, **STEADY_ADAM)
    results.append(jax.jit(trainable.train_step)(state, paired))
  (off, off_metrics), (on, on_metrics) = results
  assert "g_mode_seeking" in on_metrics and "g_mode_seeking" not in off_metrics
  # g_loss reports the base loss alone
  np.testing.assert_allclose(on_metrics["g_loss"], off_metrics["g_loss"], rtol=1e-5)
  assert max_change(on.players["d"].params, off.players["d"].params) < 1e-6
  assert max_change(on.players["g"].params, off.players["g"].params) > 1e-5


@pytest.mark.slow
def test_g_topk_gives_g_the_gradient_of_the_top_rated_fakes_only():
  """With D frozen, G's update with g_topk=0.5 differs from all fakes', and g_loss is the
  non-saturating loss of the best half of the logits, so it is lower than all fakes'."""
  frozen_d = dict(d_learning_rate=1e-30)
  results = []
  for topk in (1.0, 0.5):
    trainable, state = make("dcgan", g_topk=topk, **frozen_d)
    results.append(jax.jit(trainable.train_step)(state, batch()))
  (all_state, all_metrics), (top_state, top_metrics) = results
  assert float(top_metrics["g_loss"]) < float(all_metrics["g_loss"])
  assert max_change(top_state.players["g"].params, all_state.players["g"].params) > 1e-5


@pytest.mark.slow
def test_pixel_clusters_condition_g_and_d_on_cluster_ids_not_labels():
  config = config_lib.validate(config_lib.get_config("dcgan", pixel_clusters=4))
  family = families.get("dcgan")
  images = np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
  ids = family.train_labels(config, images, np.zeros(40, np.int32))
  assert sorted(np.bincount(ids)) == [10, 10, 10, 10]
  plain = config_lib.validate(config_lib.get_config("dcgan"))
  np.testing.assert_array_equal(family.train_labels(plain, images, np.arange(40)), np.arange(40))
  trainable = family.build(config, INFO)
  state = trainable.init(jax.random.PRNGKey(0))
  # projection on 4 clusters
  assert state.players["d"].params["label_embed"]["embedding"].shape[0] == 4
  state, metrics = jax.jit(trainable.train_step)(
      state, {"image": batch()["image"], "label": jnp.asarray(ids[:8])})
  assert all(np.isfinite(float(v)) for v in metrics.values())
  images, labels = trainable.sample(state, jax.random.PRNGKey(1), 6)
  np.testing.assert_array_equal(labels, [0, 1, 2, 3, 0, 1])  # uniform over the clusters
  grid, ncols = trainable.log_images(state, None)["samples"]
  assert ncols == 4 and grid.shape[0] == 16


def test_config_errors():
  with pytest.raises(config_lib.ConfigError, match="gan_loss"):
    make(gan_loss="wgan")
  with pytest.raises(config_lib.ConfigError, match="aux_classifier"):
    make(aux_classifier=True)
  with pytest.raises(config_lib.ConfigError, match="label_mode 'add' is unknown"):
    make(conditional=True, label_mode="add")
  with pytest.raises(config_lib.ConfigError, match="set d_batchnorm=False or spectral_norm=True"):
    make("dcgan", gan_loss="wasserstein", gp_weight=10.0)
  with pytest.raises(config_lib.ConfigError, match="g_final_features must be >= 0"):
    make("dcgan", g_final_features=-1)
  with pytest.raises(config_lib.ConfigError, match="d_base_features must be a positive"):
    make("dcgan", d_base_features=0)
  with pytest.raises(config_lib.ConfigError, match="rotation_g_weight > 0 needs rotation_d_weight"):
    make("dcgan", rotation_g_weight=0.2)
  with pytest.raises(config_lib.ConfigError, match="pixel_clusters must be 0"):
    make("dcgan", pixel_clusters=1)
  with pytest.raises(config_lib.ConfigError, match="rotation loss needs the DCGAN"):
    make("gan_mlp", rotation_d_weight=1.0)
  with pytest.raises(config_lib.ConfigError, match="pixel_clusters replaces the labels"):
    make("dcgan", pixel_clusters=10, conditional=True)
  with pytest.raises(config_lib.ConfigError, match="cr_weight must be >= 0"):
    make("dcgan", cr_weight=-1.0)
  with pytest.raises(config_lib.ConfigError, match="mode_seeking_weight must be >= 0"):
    make("dcgan", mode_seeking_weight=-1.0)
  with pytest.raises(config_lib.ConfigError, match="g_topk must be in"):
    make("dcgan", g_topk=0.0)


@pytest.mark.slow
def test_each_critic_update_takes_its_own_real_batch():
  """n_critic=2: the step's 16 rows are two batches of 8, in order. Shuffling rows within a
  batch changes nothing (no per-row noise without a GP); swapping the two batches does. (A large
  Adam epsilon keeps Adam from blowing the rounding noise of ~0 gradients up to +-lr steps.)"""
  trainable, state = make(gan_loss="wasserstein", n_critic=2, batch_size=8, adam_eps=1e-3)
  step = jax.jit(trainable.train_step)
  data = batch(16)
  first, second = np.arange(8), np.arange(8, 16)
  take = lambda rows: jax.tree_util.tree_map(lambda a: a[rows], data)  # noqa: E731
  reference, _ = step(state, data)
  shuffled, _ = step(state, take(np.concatenate([first[::-1], np.roll(second, 3)])))
  swapped, _ = step(state, take(np.concatenate([second, first])))
  for got, want in zip(jax.tree_util.tree_leaves(shuffled.players["d"].params),
                       jax.tree_util.tree_leaves(reference.players["d"].params)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert max_change(swapped.players["d"].params, reference.players["d"].params) > 1e-5
  assert families.get("gan_mlp").batches_per_step(config_lib.get_config("gan_mlp", n_critic=5)) == 5


def test_loss_terms_add_only_what_the_config_weights():
  table = {
      "a": ("gp_weight", 1.0, lambda t: 2.0), "b": ("r1_gamma", 0.5, lambda t: 3.0),
      "off": ("cr_weight", 1.0, lambda t: 1 / 0)
  }  # a term that is off is never computed
  config = {"gp_weight": 10.0, "r1_gamma": 4.0, "cr_weight": 0.0}
  loss, metrics = gan_step.add_terms(table, config, None, 1.0, {"base": 1.0})
  assert loss == 1.0 + 10.0 * 2.0 + 0.5 * 4.0 * 3.0
  assert metrics == {"base": 1.0, "a": 2.0, "b": 3.0}


def test_pixel_clusters_of_a_process_s_rows_are_the_whole_split_s(tmp_path):
  images = np.random.default_rng(1).integers(0, 256, (40, 28, 28), dtype=np.uint8)
  write_idx(tmp_path / "train-images-idx3-ubyte", images)
  write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(40))
  config = config_lib.validate(
      config_lib.get_config("dcgan", pixel_clusters=4, idx_dir=str(tmp_path)))
  family, labels = families.get("dcgan"), np.zeros(40, np.int32)
  whole = family.train_labels(config, images[..., None], labels)
  got = family.train_labels(config, images[10:30, ..., None], labels[10:30], rows=(10, 30))
  np.testing.assert_array_equal(got, whole[10:30])
  assert sorted(np.bincount(whole)) == [10] * 4 and len(set(got)) > 1
