"""Configs: the defaults, validation errors that name the key and the fix, value types, the JSON
round trip, command-line overrides and experiment files."""

import json

import numpy as np
import pytest
from helpers import small_config

from aigc_jax import config as config_lib

ConfigError = config_lib.ConfigError


def test_get_config_takes_known_overrides_and_refuses_unknown_ones():
  config = config_lib.get_config("vae_mlp", learning_rate=0.1, hidden_dim=7)
  assert (config.model, config.learning_rate, config.hidden_dim, config.seed) == ("vae_mlp", 0.1, 7,
                                                                                  0)
  with pytest.raises(ConfigError, match="unknown config key 'lerning_rate': did you mean "
                     "'learning_rate'"):
    config_lib.get_config("vae_mlp", lerning_rate=0.1)


def test_misspelt_config_key_is_an_error(idx_dir):
  config = small_config(idx_dir)
  config.lerning_rate = 0.1
  with pytest.raises(config_lib.ConfigError, match="did you mean 'learning_rate'"):
    config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match="likelihood"):
    config_lib.validate(small_config(idx_dir, likelihood="poisson"))


def test_validate_names_a_missing_key_or_an_unknown_model_and_the_fix():
  config = config_lib.get_config("dcgan")
  del config["seed"]
  with pytest.raises(
      ConfigError, match=r"config key 'seed' is missing; start from "
      r"aigc_jax\.config\.get_config\('dcgan'\)"):
    config_lib.validate(config)
  config = config_lib.get_config("vae_mlp")
  config.model = "vae_mpl"
  with pytest.raises(ConfigError, match=r"model 'vae_mpl' is unknown; choose one of \[.*'vae_mlp'"):
    config_lib.validate(config)


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="svhn"), "dataset 'svhn' is unknown; choose one of ["),
    (dict(scale="zero_two"), "scale 'zero_two' is unknown; use 'zero_one' or 'minus_one_one'"),
    (dict(binarize=True, scale="minus_one_one"), "binarize=True needs scale='zero_one'"),
    (dict(eval_batch_size=0), "eval_batch_size must be a positive integer, got 0"),
    (dict(num_train_steps=-1, num_epochs=0), "set num_train_steps > 0 or num_epochs > 0"),
    (dict(learning_rate=0.0), "learning_rate must be > 0, got 0.0"),
    (dict(lr_schedule="linear"), "lr_schedule 'linear' is unknown; use 'constant' or 'cosine'"),
    (dict(parallel="dp"), "parallel 'dp' is unknown; use 'auto', 'none', 'pmap' or 'shard_map'"),
    (dict(process_id=-2), "num_processes must be >= 0 and process_id >= -1"),
    (dict(keep_checkpoints=0), "keep_checkpoints must be >= 1, got 0"),
    (dict(early_stopping_patience=-1), "early_stopping_patience must be >= 0 (0 = off), got -1"),
])
def test_a_bad_shared_value_is_one_line_naming_the_key_and_the_fix(overrides, message):
  with pytest.raises(ConfigError) as raised:
    config_lib.validate(config_lib.get_config("vae_mlp", **overrides))
  assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
  config_lib.validate(config_lib.get_config("vae_mlp"))  # the defaults pass


@pytest.mark.parametrize(
    "value, default, problem",
    [
        (True, 1, "not an integer"),
        (2**31, 1, "out of the range -2147483648 to 2147483647"),
        (2**31 - 1, 1, None),
        (-2**31, 1, None),
        (np.int64(3), 1, None),
        (1, 0.5, None),
        (True, 0.5, "not a number"),
        ("1", 0.5, "not a number"),
        (float("nan"), 0.5, "not a finite number"),
        (1, True, "not true or false"),
        (None, "a", "not a string"),
        ([8, 16], (32, 64), None),
        ((8, 2.5), (32, 64), "a list with an element that is not an integer"),
        ("ab", (32,), "not a list"),
        (["x"], (), None),  # an empty default says nothing of its elements
    ])
def test_type_problem_says_why_a_value_cannot_stand_for_its_default(value, default, problem):
  assert config_lib.type_problem(value, default) == problem


def test_check_types_names_the_first_bad_key_its_value_shortened_and_its_default():
  defaults = {"a": 1, "b": 0.5, "c": "s"}
  config_lib.check_types({"a": 2, "unknown": object(), "c": "t"}, defaults)  # unknown: not its
  with pytest.raises(ConfigError) as raised:
    config_lib.check_types({"a": 2, "b": "x" * 100, "c": 3}, defaults)
  assert str(raised.value) == ("b is '" + "x" * 56 + "..., not a number; give it a value like "
                               "its default 0.5")


def test_the_python_api_checks_value_types_too():
  config = config_lib.get_config("vae_mlp", learning_rate="abc")
  with pytest.raises(config_lib.ConfigError, match="learning_rate is 'abc', not a number"):
    config_lib.validate(config)
  config_lib.validate(config_lib.get_config("vae_mlp", learning_rate=1, conv_features=[8, 16]))


def test_a_config_comes_back_from_its_json_with_the_file_s_name_in_errors():
  config = config_lib.get_config("vae_conv", dataset="mnist", learning_rate=3e-4, binarize=True,
                                 conv_features=(8, 16), seed=7, lr_schedule="cosine")
  saved = json.loads(config.to_json())
  assert config_lib.from_saved(saved, "config.json").to_json() == config.to_json()
  with pytest.raises(ConfigError) as raised:
    config_lib.from_saved({**saved, "seed": "x"}, "f.json")
  assert str(raised.value) == ("f.json: seed is 'x', not an integer; give it a value like its "
                               "default 0 (edit the file, restore it from a backup, or use a new "
                               "--workdir)")
  with pytest.raises(ConfigError, match=r"^'config': seed is 'x', .* default 0$"):
    config_lib.from_saved({**saved, "seed": "x"}, "'config'", fix="")


def test_command_line_overrides_take_their_default_s_type_and_leave_the_other_arguments():
  config = config_lib.get_config("vae_conv")
  rest = config_lib.apply_overrides(config, [
      "--workdir", "w", "--config.learning_rate=1e-2", "--config.binarize", "TRUE",
      "--config.num_epochs=3.0", "--config.conv_features=(8, 16)", "--config.dataset=mnist",
      "--step", "4"
  ])
  assert rest == ["--workdir", "w", "--step", "4"]
  assert (config.learning_rate, config.binarize, config.num_epochs, config.conv_features,
          config.dataset) == (0.01, True, 3, (8, 16), "mnist")
  assert type(config.num_epochs) is int


@pytest.mark.parametrize("args, message", [
    (["--config.num_epochs=2.5"], "--config.num_epochs=2.5: not an int"),
    (["--config.binarize=yes"], "--config.binarize takes true or false, got 'yes'"),
    (["--config.learning_rate=fast"], "--config.learning_rate=fast: not a float"),
    (["--config.learning_rate=[1]"], "--config.learning_rate=[1]: not a float"),
    (["--config.num_epochs=True"], "--config.num_epochs=True: not an int"),
    (["--config.conv_features=8"], "--config.conv_features=8: not a tuple such as (32, 64) (one "
     "value: (8,))"),
    (["--config.conv_features='ab'"], "--config.conv_features='ab': not a tuple such as "
     "(32, 64) (one value: ('ab',))"),
    (["--config.lerning_rate=1"], "unknown config key 'lerning_rate': did you mean "
     "'learning_rate'? (in --config.lerning_rate=1)"),
    (["--workdir", "w", "--config.seed"], "--config.seed needs a value: --config.seed=VALUE"),
])
def test_a_bad_command_line_override_names_the_argument(args, message):
  with pytest.raises(ConfigError) as raised:
    config_lib.apply_overrides(config_lib.get_config("vae_conv"), args)
  assert str(raised.value) == message


def test_an_experiment_file_gives_its_get_config(tmp_path):
  good, bare, text = tmp_path / "good.py", tmp_path / "bare.py", tmp_path / "good.txt"
  good.write_text("from aigc_jax import config\n\n\ndef get_config():\n"
                  "  return config.get_config('vae_mlp', seed=5)\n")
  bare.write_text("X = 1\n")
  text.write_text(good.read_text())
  assert config_lib.load_experiment(str(good)).seed == 5
  with pytest.raises(ConfigError, match=r"bare\.py has no get_config\(\)"):
    config_lib.load_experiment(str(bare))
  for path in (text, tmp_path / "missing.py"):
    with pytest.raises(ConfigError, match=r"is not an experiment file; name one such as"):
      config_lib.load_experiment(str(path))
