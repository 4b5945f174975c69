"""The commands' first minutes: --help, `python -m aigc_jax.train --config=FILE`, the errors of a
wrong model or workdir, the one-line summaries and the logs outside a terminal."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import read_jsonl
from helpers import small_config

from aigc_jax import config as config_lib
from aigc_jax import demo_summary
from aigc_jax import evaluate
from aigc_jax import fid_stats
from aigc_jax import plot
from aigc_jax import sample
from aigc_jax import sweep
from aigc_jax import train
from aigc_jax import train_cli
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers
from aigc_jax.bench import cli as bench_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE_FILE = "experiments/vae_mlp_fashion_mnist.py"


def _python(*args, timeout=120):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.parametrize("command, usage, flags", [
    ([VAE_FILE, "--help"], f"python {VAE_FILE} --workdir", train_cli.FLAGS),
    (["-m", "aigc_jax.train", "-h"
     ], "usage: python -m aigc_jax.train --workdir DIR --config=", train_cli.FLAGS),
    (["-m", "aigc_jax.train", f"--config={VAE_FILE}", "--help"
     ], f"python {VAE_FILE} --workdir", train_cli.FLAGS),
    (["-m", "aigc_jax.sample", "--help"], "python -m aigc_jax.sample --workdir DIR", sample.FLAGS),
    (["-m", "aigc_jax.evaluate", "-h"
     ], "python -m aigc_jax.evaluate --workdir DIR", evaluate.FLAGS),
    (["-m", "aigc_jax.fid_stats", "--help"
     ], "python -m aigc_jax.fid_stats --dataset cifar10", fid_stats.FLAGS),
    (["-m", "aigc_jax.sweep", "--help"
     ], "python -m aigc_jax.sweep experiments/NAME.py", sweep.FLAGS),
    (["-m", "aigc_jax.plot", "-h"], "python -m aigc_jax.plot --workdir A", plot.FLAGS),
    (["-m", "aigc_jax.bench", "--help"], "python -m aigc_jax.bench --model", bench_cli.FLAGS),
    (["-m", "aigc_jax.demo_summary", "--help"
     ], "python -m aigc_jax.demo_summary WORKDIR", demo_summary.FLAGS),
], ids=lambda v: " ".join(v[-2:]) if isinstance(v, list) else None)
def test_help_exits_0_with_the_usage_and_every_flag(command, usage, flags):
  done = _python(*command)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = [line.strip() for line in done.stdout.splitlines()]
  assert any(line.startswith(usage) for line in lines), done.stdout[:2000]
  for name in flags:
    assert any(re.match(rf"--(\[no\])?{name}: \S", line) for line in lines), (name, done.stdout)


def test_the_module_without_arguments_prints_usage_and_exits_2():
  done = _python("-m", "aigc_jax.train")
  assert done.returncode == 2 and done.stderr.startswith("usage: python -m aigc_jax.train")


@pytest.mark.parametrize("args, message", [
    (["--config=experiments/nope.py"], "--config=experiments/nope.py: no such experiment file"),
    (["--config", "README.md"], "--config=README.md: no such experiment file"),
    (["--config=tests/helpers.py"], "tests/helpers.py has no get_config()"),
    (["--workdir", "/tmp/ux_never"], "--config=experiments/NAME.py is required"),
])
def test_the_module_refuses_bad_input_with_one_line(args, message):
  done = _python("-m", "aigc_jax.train", *args)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == f"error: {message}" or (
      f"error: {message}" in done.stderr.strip().splitlines()[-1]), done.stderr


def test_an_experiment_file_says_it_is_itself_the_config():
  done = _python(VAE_FILE, "--workdir", "/tmp/ux_never", f"--config={VAE_FILE}")
  assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
  assert "is itself the config: override its keys with --config.KEY=VALUE" in done.stderr


def test_config_file_takes_both_spellings_and_keeps_the_rest():
  assert train_cli.config_file(["--config=a.py", "--config.seed=1", "--workdir",
                                "w"]) == ("a.py", ["--config.seed=1", "--workdir", "w"])
  assert train_cli.config_file(["--workdir=w", "--config", "b.py"]) == ("b.py", ["--workdir=w"])
  assert train_cli.config_file(["--config.seed", "1"]) == (None, ["--config.seed", "1"])


def test_a_model_of_another_family_names_the_file_s_keys_and_where_to_start():
  config = config_lib.load_experiment(VAE_FILE)
  with pytest.raises(SystemExit) as exit_info:
    train_cli.parse(config, VAE_FILE, ["--config.model=dcgan"])
  assert exit_info.value.code == 2
  config = config_lib.load_experiment(VAE_FILE)
  config.model = "dcgan"
  with pytest.raises(config_lib.ConfigError) as e:
    train_cli.check_model_change(config, "vae_mlp", VAE_FILE)
  message = str(e.value)
  assert message.startswith(f"--config.model=dcgan changes the model of {VAE_FILE} from "
                            "'vae_mlp' (vae family) to another family (gan)")
  assert "beta" in message and "hidden_dim" in message and "unknown config key" not in message
  assert "run experiments/dcgan_fashion_mnist.py" in message
  assert "get_config('dcgan')" in message
  config.model = "vae_conv"  # the same family: the same keys, no error
  train_cli.check_model_change(config, "vae_mlp", VAE_FILE)


def test_a_workdir_of_another_model_is_named_before_any_key(tmp_path):
  workdir = str(tmp_path)
  workdir_lib.save_config(workdir, config_lib.get_config("vae_mlp"))
  (tmp_path / "checkpoints" / "8").mkdir(parents=True)
  dcgan = config_lib.load_experiment("experiments/dcgan_fashion_mnist.py")
  dcgan.allow_config_change = True  # no change makes another network's checkpoints fit
  with pytest.raises(
      config_lib.ConfigError,
      match=rf"^{workdir} holds a vae_mlp run, not a dcgan one; .*new --workdir.*"
      r"experiments/vae_mlp_fashion_mnist.py"):
    workdir_lib.check_resume_config(workdir, dcgan)


def test_summaries_hide_spreads_and_rounding_noise():
  line = train.summary({"fid": 12.3456, "kid": 4.5e-16, "kid_std": 0.01, "loss": -0.5}, 3)
  assert line == "test_fid=12.346 test_kid=0 test_loss=-0.500"


def test_learning_rate_follows_the_schedule():
  config = config_lib.get_config("vae_mlp", learning_rate=0.01, lr_schedule="cosine")
  assert train.learning_rate(config, 0, 100) == pytest.approx(0.01)
  assert train.learning_rate(config, 50, 100) == pytest.approx(0.005)
  assert train.learning_rate(config, 100, 100) == pytest.approx(0.0)
  config.lr_schedule = "constant"
  assert train.learning_rate(config, 50, 100) == 0.01


def test_the_last_line_names_tensorboard_only_when_it_is_installed(monkeypatch):
  monkeypatch.setattr(train_cli.importlib.util, "find_spec", lambda name: None)
  assert "event files in w/tensorboard for any TensorBoard" in train_cli.outputs_line("w")
  assert "tensorboard --logdir" not in train_cli.outputs_line("w")
  monkeypatch.setattr(train_cli.importlib.util, "find_spec", lambda name: object())
  assert "(tensorboard --logdir w)" in train_cli.outputs_line("w")


@pytest.mark.slow
def test_a_run_logs_lines_outside_a_terminal_and_records_the_learning_rate(
    idx_dir, tmp_path, capsys, caplog):
  workdir = str(tmp_path / "run")
  with caplog.at_level("INFO", logger="aigc_jax"):
    train.train_and_evaluate(small_config(idx_dir, progress_bar=True, num_train_steps=8), workdir)
  # The last step's line, though under PLAIN_EVERY_S, with the losses logged at that step.
  assert re.search(r"step 8/8 \([0-9.]+ steps/s\) loss=[0-9.]+$", caplog.text, re.M)
  out = capsys.readouterr()
  assert "\r" not in out.err  # no bar outside a terminal
  assert "step 8: evaluating (the test split, then the sample grids)..." in out.out
  train_records = [
      r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "train"
  ]
  assert [r["learning_rate"] for r in train_records] == [1e-3, 1e-3]


@pytest.mark.slow
def test_the_module_trains_as_the_experiment_file_does(idx_dir, tmp_path):
  overrides = [
      f"--config.{k}={v}"
      for k, v in dict(idx_dir=idx_dir, hidden_dim=32, latent_dim=4, batch_size=32,
                       num_train_steps=8, eval_every_steps=8, progress_bar=False,
                       eval_iwae_samples=5, eval_iwae_examples=5).items()
  ]
  results = []
  for command in ([VAE_FILE], ["-m", "aigc_jax.train", "--config", VAE_FILE]):
    workdir = str(tmp_path / str(len(results)))
    done = _python(*command, "--workdir", workdir, *overrides, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    test = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "test"]
    results.append((config, test, done.stdout.splitlines()[-2]))
  assert results[0] == results[1]
  assert np.isfinite(results[0][1][-1]["neg_elbo"])


def test_tensorboard_gets_the_config_as_text(tmp_path):
  writer = writers.MetricWriter(str(tmp_path / "run"))
  config = config_lib.get_config("vae_mlp", seed=7)
  writer.write_text(0, "config", train.config_table(config))
  writer.close()
  (path,) = (tmp_path / "run" / "tensorboard").iterdir()
  data = path.read_bytes()
  assert b"| seed | `7` |" in data and b"text" in data  # the text plugin's summary
