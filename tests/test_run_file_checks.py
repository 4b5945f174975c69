"""Run files a user may edit by hand (a run's config.json, a sweep's sweep.json) are checked when
read: a bad one is a ConfigError naming the file, the key and the problem, which the commands
print as one `error:` line (exit status 2). config.json's checks: test_workdir.py."""

import json
import os
import subprocess
import sys

import pytest
from helpers import saved_config

from aigc_jax import config as config_lib
from aigc_jax import sweep_spec
from aigc_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def spec():
  config = config_lib.get_config("vae_mlp", num_train_steps=8)
  return sweep_spec.make_spec(config, ["learning_rate=1e-3,2e-3"])


def edited(spec, change):
  spec = json.loads(json.dumps(spec))
  return change(spec) or spec


@pytest.mark.parametrize("change, message", [
    (lambda s: [1, 2], r"holds list, not a sweep's object of"),
    (lambda s: s.pop("values") and None, r"holds an object with \['config', 'halve_every', "
     r"'stops'\], not a sweep's object"),
    (lambda s: s["config"].update(learning_rate="abc"), r"'config': learning_rate is 'abc', not "
     r"a number"),
    (lambda s: s.update(config=[1]), r"'config' is not an object of config keys"),
    (lambda s: s["values"].update(learning_rate=[1e-3, "x"]), r"'values' of learning_rate is a "
     r"list with an element that is not a number"),
    (lambda s: s["values"].update(seed=[1, 2, 3]), r"'values' of seed is not a list of one value "
     r"per member"),
    (lambda s: s["values"].update(batch_size=[8, 16]), r"'values': --vary batch_size: a int key"),
    (lambda s: s.update(halve_every=-1), r"'halve_every' is -1, not an integer >= 0"),
    (lambda s: s.update(stops=[{"step": 8, "members": [5], "reason": "halved"}]),
     r"'stops' holds .*'members': some of 0 to 1"),
])
def test_a_hand_edited_sweep_json_names_the_file_the_key_and_the_problem(
    tmp_path, spec, change, message):
  path = tmp_path / sweep_spec.SWEEP_FILE
  path.write_text(json.dumps(edited(spec, change)))
  with pytest.raises(config_lib.ConfigError, match=message) as raised:
    sweep_spec.read_spec(str(tmp_path))
  assert str(raised.value).startswith(str(path)) and "new --workdir" in str(raised.value)
  assert len(str(raised.value).splitlines()) == 1


def test_a_sweep_json_as_written_reads_back(tmp_path, spec):
  stopped = edited(spec,
                   lambda s: s["stops"].append({"step": 4, "members": [1], "reason": "halved"}))
  sweep_spec.write_spec(str(tmp_path), stopped)
  assert sweep_spec.read_spec(str(tmp_path)) == stopped


def run_module(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("module, name, text, message", [
    ("aigc_jax.evaluate", workdir_lib.CONFIG_FILE, saved_config(batch_size=[1, 2]),
     "batch_size is [1, 2], not an integer"),
    ("aigc_jax.sweep", sweep_spec.SWEEP_FILE, "{x", "cannot be read as JSON"),
], ids=["evaluate_config_json", "sweep_sweep_json"])
def test_commands_print_one_error_line_for_a_bad_run_file(tmp_path, module, name, text, message):
  (tmp_path / name).write_text(text)
  done = run_module(module, "--workdir", str(tmp_path))
  assert done.returncode == 2, done.stderr[-2000:]
  [line] = done.stderr.strip().splitlines()
  assert line.startswith(f"error: {tmp_path / name}") and message in line, line
