"""A population's specs (--vary), its checks (program keys, traceable values, shapes), stacking
and halving."""

import functools

import jax
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import population as pop_lib


def test_specs_give_one_value_per_member():
  config = config_lib.get_config("vae_mlp", seed=3)
  values = pop_lib.member_values(
      config, ["learning_rate=loguniform:1e-4:1e-2", "beta=0.5,1,2", "seed=seeds"], 3)
  assert values["beta"] == [0.5, 1.0, 2.0] and values["seed"] == [3, 4, 5]
  assert all(1e-4 <= v <= 1e-2 for v in values["learning_rate"])
  assert len(set(values["learning_rate"])) == 3
  again = pop_lib.member_values(config, ["learning_rate=loguniform:1e-4:1e-2"], 3)
  assert again["learning_rate"] == values["learning_rate"]  # drawn with the config's seed


@pytest.mark.parametrize("varies, members, message", [
    (["hidden_dim=16,32"], None, "int key sets shapes"),
    (["likelihood=gaussian,bernoulli"], None, "str key sets shapes"),
    (["learnin_rate=1e-3,1e-2"], None, "did you mean 'learning_rate'"),
    (["learning_rate=1e-3,1e-2,1e-1"], 2, "lists 3 values for --members 2"),
    (["learning_rate=loguniform:1e-2:1e-4"], 2, "0 < LOW < HIGH"),
    (["learning_rate=loguniform:1e-4:1e-2"], None, "needs --members"),
    (["beta=seeds"], 2, "'seeds' is for the key seed"),
    (["learning_rate"], 2, "write KEY=SPEC"),
    (["learning_rate=1e-3"], None, "at least 2 members"),
    (["learning_rate=1e-3,-1"], None, "member 1 (learning_rate=-1): learning_rate must be > 0"),
])
def test_bad_vary_arguments_are_refused(varies, members, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config = config_lib.get_config("vae_mlp")
    pop_lib.member_configs(config, pop_lib.member_values(config, varies, members))


def test_a_key_the_step_branches_on_is_refused():

  def step(member, batch):
    scale = 2.0 if member.values["weight"] > 0 else 1.0
    return member, {"loss": scale * batch["x"].sum()}

  batch = {"x": jax.ShapeDtypeStruct((4,), np.float32)}
  with pytest.raises(config_lib.ConfigError, match="decides its structure by weight"):
    pop_lib.check_traceable(step, {}, batch, ["weight"])
  pop_lib.check_traceable(lambda m, b: (m, {"loss": m.values["weight"] * b["x"].sum()}), {}, batch,
                          ["weight"])


@pytest.mark.parametrize("model,options", [("vae_mlp", {}), ("vae_conv", {"conditional": True}),
                                           ("gan_mlp", {}),
                                           ("dcgan", {"gan_loss": "hinge", "conditional": True}),
                                           ("unet", {"conditional": True})])
def test_every_float_key_but_the_family_s_program_keys_enters_the_step_as_a_value(model, options):
  config = config_lib.get_config(model, **options, batch_size=4)
  family, info = families.get(model), data_lib.DATASETS[config.dataset]
  floats = [k for k, v in config.items() if isinstance(v, float) and not isinstance(v, bool)]
  varied = [k for k in floats if k not in family.PROGRAM_KEYS]
  assert len(varied) >= 4 and set(family.PROGRAM_KEYS) <= set(floats)
  step = functools.partial(pop_lib.member_step, family=family, config=config, info=info,
                           total_steps=10)
  state = jax.eval_shape(family.build(config, info, 10).init, jax.random.PRNGKey(0))
  rows = config.batch_size * family.batches_per_step(config)
  batch = {
      "image": jax.ShapeDtypeStruct((rows, *info.image_shape), np.float32),
      "label": jax.ShapeDtypeStruct((rows,), np.int32)
  }
  traced = {k: jax.ShapeDtypeStruct((), np.float32) for k in varied}
  jax.eval_shape(step, pop_lib.Member(state=state, values=traced), batch)  # all of them at once
  for key in varied:
    pop_lib.check_key(config, key)
  for key in family.PROGRAM_KEYS:
    with pytest.raises(config_lib.ConfigError, match=f"--vary {key}: its value chooses"):
      pop_lib.check_key(config, key)


@pytest.mark.parametrize("scores, mode, kept", [
    ([3.0, 1.0, 2.0, 4.0], "min", [1, 2]),
    ([3.0, 1.0, 2.0, 4.0], "max", [0, 3]),
    ([float("nan"), 1.0, 2.0], "min", [1, 2]),
    ([5.0, 5.0], "min", [0]),
])
def test_survivors_are_the_better_half(scores, mode, kept):
  assert pop_lib.survivors(scores, mode) == kept


def test_a_uniform_range_is_drawn_with_the_config_s_seed_and_its_bounds_are_checked():
  config = config_lib.get_config("vae_mlp", seed=4)
  values = pop_lib.member_values(config, ["learning_rate=uniform:0.1:0.2"], 50)["learning_rate"]
  assert values == list(np.random.default_rng(4).uniform(0.1, 0.2, 50))
  assert min(values) >= 0.1 and max(values) < 0.2 and abs(np.mean(values) - 0.15) < 0.02
  for spec, message in (("uniform:2:1", "need LOW < HIGH"), ("uniform:1", "write uniform:LOW:HIGH"),
                        ("loguniform:0:1", "need 0 < LOW < HIGH")):
    with pytest.raises(config_lib.ConfigError, match=f"^--vary learning_rate={spec}: {message}"):
      pop_lib.member_values(config, [f"learning_rate={spec}"], 2)


def test_a_key_varied_twice_or_a_seed_that_is_not_an_integer_is_refused():
  config = config_lib.get_config("vae_mlp")
  with pytest.raises(config_lib.ConfigError, match="^--vary beta is given twice; give it once$"):
    pop_lib.member_values(config, ["beta=1,2", "beta=3,4"], None)
  with pytest.raises(config_lib.ConfigError, match=r"^--vary seed=1\.5,2: .*not an int"):
    pop_lib.member_values(config, ["seed=1.5,2"], None)


def test_stepped_values_are_float32_columns_without_the_seed_and_describe_shows_a_member():
  values = {"learning_rate": [1e-3, 1.23456e-4], "seed": [0, 1]}
  stepped = pop_lib.stepped_values(values)
  assert list(stepped) == ["learning_rate"] and stepped["learning_rate"].dtype == np.float32
  np.testing.assert_array_equal(stepped["learning_rate"], np.float32([1e-3, 1.23456e-4]))
  assert pop_lib.describe(values, 1) == "learning_rate=0.0001235, seed=1"


def test_row_and_take_pick_members_of_a_stacked_tree():
  tree = {"a": np.arange(6).reshape(3, 2), "b": np.arange(3) * 10}
  taken = pop_lib.take(tree, [2, 0])
  np.testing.assert_array_equal(taken["a"], [[4, 5], [0, 1]])
  np.testing.assert_array_equal(taken["b"], [20, 0])
  row = pop_lib.row(tree, 1)
  np.testing.assert_array_equal(row["a"], [2, 3])
  assert int(row["b"]) == 10


def test_members_whose_states_differ_in_shape_are_refused():
  same = {"w": jax.ShapeDtypeStruct((2, 3), np.float32), "b": np.zeros(3)}
  pop_lib.check_shapes([same, same])
  other = {"w": jax.ShapeDtypeStruct((2, 3), np.float32), "b": np.zeros(4)}
  with pytest.raises(config_lib.ConfigError, match="^member 2's train state differs in shape "
                     "from member 0's"):
    pop_lib.check_shapes([same, same, other])
