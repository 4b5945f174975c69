"""A run's directory: its config.json read back (old runs, hand edits), its history of changes,
the resume comparison, the tools' options."""

import json
import os
import re

import pytest
from helpers import saved_config
from helpers import small_config

from aigc_jax import config as config_lib
from aigc_jax import workdir as workdir_lib
from aigc_jax.checkpoint import CheckpointError


def write_config(workdir, text):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(text)


@pytest.mark.parametrize("text, message", [
    (saved_config(learning_rate="abc"), r"learning_rate is 'abc', not a number"),
    (saved_config(batch_size=[1, 2]), r"batch_size is \[1, 2\], not an integer"),
    (saved_config(latent_dim=1e308), r"latent_dim is 1e\+308, not an integer"),
    (saved_config(latent_dim=10**30), r"latent_dim is 1000000000000000000000000000000, out of "
     r"the range"),
    (saved_config(learning_rate=float("inf")), r"learning_rate is inf, not a finite number"),
    (saved_config(binarize=1), r"binarize is 1, not true or false"),
    (saved_config(conv_features=[32, "x"]), r"conv_features is \[32, 'x'\], a list with an "
     r"element that is not an integer"),
    (saved_config(dataset=None), r"dataset is None, not a string"),
    (saved_config(model=3), r"model is 3, not a model name"),
    (saved_config(lerning_rate=0.1), r"unknown config key 'lerning_rate': did you mean "
     r"'learning_rate'"),
    (saved_config(learning_rate=-1.0), r"learning_rate must be > 0"),
    (saved_config(history="x"), r"'history' is not the list of changes"),
    ("{x", r"cannot be read as JSON"),
    ("[1, 2]", r"is not a JSON object"),
])
def test_a_hand_edited_config_json_names_the_file_the_key_and_the_problem(tmp_path, text, message):
  write_config(tmp_path, text)
  with pytest.raises(config_lib.ConfigError) as raised:
    workdir_lib.load_config(str(tmp_path))
  assert str(raised.value).startswith(str(tmp_path / workdir_lib.CONFIG_FILE))
  assert len(str(raised.value).splitlines()) == 1
  assert re.search(message, str(raised.value)), str(raised.value)


def test_a_workdir_from_before_new_config_keys_still_loads(idx_dir, tmp_path):
  saved = small_config(idx_dir, learning_rate=3e-3).to_dict()
  del saved["adam_eps"], saved["parallel"]  # keys this project added after such runs were written
  with open(tmp_path / workdir_lib.CONFIG_FILE, "w") as f:
    json.dump(saved, f)
  config = workdir_lib.load_config(str(tmp_path))
  assert config.adam_eps == 1e-8 and config.parallel == "auto"  # the defaults
  assert config.learning_rate == 3e-3 and config.model == "vae_mlp"  # the run's own values
  saved["learing_rate"] = 1.0
  with open(tmp_path / workdir_lib.CONFIG_FILE, "w") as f:
    json.dump(saved, f)
  with pytest.raises(config_lib.ConfigError, match="did you mean 'learning_rate'"):
    workdir_lib.load_config(str(tmp_path))


def test_save_config_keeps_the_history_of_the_changes_made_at_resumes(tmp_path):
  workdir = str(tmp_path)
  first = config_lib.get_config("vae_mlp", num_train_steps=8)
  workdir_lib.save_config(workdir, first)
  second = config_lib.get_config("vae_mlp", num_train_steps=16, seed=1)
  workdir_lib.save_config(workdir, second, {"seed": [0, 1]}, step=8)
  workdir_lib.save_config(workdir, second)  # no changes: the history stays
  third = config_lib.get_config("vae_mlp", num_train_steps=16, seed=2)
  workdir_lib.save_config(workdir, third, {"seed": [1, 2]}, step=16)
  saved = workdir_lib.read_config_json(str(tmp_path / workdir_lib.CONFIG_FILE))
  assert saved[workdir_lib.HISTORY] == [{"step": 8, "changes": {"seed": [0, 1]}},
                                        {"step": 16, "changes": {"seed": [1, 2]}}]
  assert workdir_lib.load_config(workdir).to_json() == third.to_json()  # history left out


def test_resume_compares_configs_only_once_there_are_checkpoints(tmp_path):
  """A changed seed is refused unless allowed, then reported; a longer run is no change."""
  workdir = str(tmp_path)
  workdir_lib.save_config(workdir, config_lib.get_config("vae_mlp", num_train_steps=8))
  changed = config_lib.get_config("vae_mlp", num_train_steps=16, seed=1)
  (tmp_path / "checkpoints" / "tmp").mkdir(parents=True)  # no step folder: a new run
  assert not workdir_lib.has_checkpoints(workdir)
  assert workdir_lib.check_resume_config(workdir, changed) == {}
  (tmp_path / "checkpoints" / "8").mkdir()
  assert workdir_lib.has_checkpoints(workdir)
  with pytest.raises(
      config_lib.ConfigError, match=r"^--config\.seed=1 differs from the 0 that "
      r"the run in .* --config\.allow_config_change=True"):
    workdir_lib.check_resume_config(workdir, changed)
  assert workdir_lib.check_resume_config(workdir,
                                         config_lib.get_config("vae_mlp",
                                                               num_train_steps=16)) == {}
  changed.allow_config_change = True
  assert workdir_lib.check_resume_config(workdir, changed) == {"seed": [0, 1]}


def test_a_tool_s_options_must_exist_for_the_model_and_pass_its_checks():
  config = config_lib.get_config("vae_mlp")
  workdir_lib.check_tool_options(config, {"iwae_samples": 5})
  assert config.eval_iwae_samples != 5  # the check leaves the run's config alone
  with pytest.raises(config_lib.ConfigError, match=r"^--num_samples does not apply to model "
                     r"'vae_mlp'; drop it$"):
    workdir_lib.check_tool_options(config, {"iwae_samples": 5, "num_samples": 10})
  with pytest.raises(
      config_lib.ConfigError, match=r"eval_iwae_samples and eval_iwae_examples "
      r"must be >= 1 \(from --iwae_samples, --iwae_examples\)$"):
    workdir_lib.check_tool_options(config, {"iwae_samples": 0, "iwae_examples": 5})


def test_a_workdir_without_config_json_says_how_to_make_one(tmp_path):
  with pytest.raises(
      CheckpointError, match=r"config\.json not found: --workdir must be a "
      r"directory written by an experiment"):
    workdir_lib.load_config(str(tmp_path))
