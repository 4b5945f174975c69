"""A run survives a corrupt checkpoint and divergence: nothing bad is saved or silently loaded."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import pytest
from helpers import arrays
from helpers import read_jsonl
from helpers import small_config

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import lock
from aigc_jax import signals as signals_lib
from aigc_jax import sweep_spec
from aigc_jax import sweep_train
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.checkpoint import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flip_bytes(workdir: str, step: int, count: int = 400) -> None:
  """Inverts `count` bytes in the middle of the largest array file of checkpoint `step`."""
  files = [
      p for p in pathlib.Path(workdir_lib.checkpoint_dir(workdir), str(step)).rglob("*")
      if p.is_file() and "d" in p.parent.name
  ]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  start = len(data) // 2 - count // 2
  data[start:start + count] = bytes(255 - b for b in data[start:start + count])
  target.write_bytes(bytes(data))


def test_a_flipped_checkpoint_is_refused_and_the_previous_one_used(idx_dir, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(small_config(idx_dir), workdir)  # checkpoints at steps 8 and 16
  good = workdir_lib.load_trained(workdir, 8).state
  flip_bytes(workdir, 16)
  with pytest.raises(CheckpointError, match="checkpoint .*16"):
    workdir_lib.load_trained(workdir, 16)
  run = workdir_lib.load_trained(workdir, "latest")
  assert run.step == 8 and "skipping checkpoint" in caplog.text
  chex.assert_trees_all_equal(arrays(run.state), arrays(good))


@pytest.mark.slow
def test_resume_after_a_corrupt_checkpoint_ends_like_an_unbroken_run(idx_dir, tmp_path):
  unbroken, broken = str(tmp_path / "unbroken"), str(tmp_path / "broken")
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=24), unbroken)
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=16), broken)
  flip_bytes(broken, 16)
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=24), broken)  # from step 8
  want = workdir_lib.load_trained(unbroken, "latest")
  got = workdir_lib.load_trained(broken, "latest")
  assert got.step == want.step == 24
  chex.assert_trees_all_equal(arrays(got.state), arrays(want.state))


@pytest.mark.slow
def test_resume_from_a_chosen_step_drops_the_later_checkpoints(idx_dir, tmp_path):
  """Steps 8-16 trained again at another learning rate from --step 8 == a run that switched
  learning rates at step 8."""
  switched, resumed = str(tmp_path / "switched"), str(tmp_path / "resumed")
  train.train_and_evaluate(small_config(idx_dir, learning_rate=3e-3, num_train_steps=8), switched)
  train.train_and_evaluate(small_config(idx_dir, allow_config_change=True), switched)
  train.train_and_evaluate(small_config(idx_dir, learning_rate=3e-3), resumed)  # to step 16
  train.train_and_evaluate(small_config(idx_dir, allow_config_change=True), resumed, step=8)
  got, want = (workdir_lib.load_trained(w, "latest") for w in (resumed, switched))
  assert got.step == want.step == 16
  chex.assert_trees_all_equal(arrays(got.state), arrays(want.state))
  with pytest.raises(CheckpointError, match=r"pick one of the steps \[8, 16\]"):
    train.train_and_evaluate(small_config(idx_dir), resumed, step=12)


def test_a_state_that_is_not_finite_is_never_saved(idx_dir, tmp_path):
  """Divergence between two logs: the checkpoints saved before it stay, none after it."""
  workdir = str(tmp_path / "nan")
  config = small_config(idx_dir, learning_rate=1e9, num_train_steps=40, log_every_steps=40,
                        eval_every_steps=40, checkpoint_every_steps=2, steps_per_call=1)
  with pytest.raises(train.TrainingError, match="not finite, so it was not saved"):
    train.train_and_evaluate(config, workdir)
  steps = sorted(int(p) for p in os.listdir(workdir_lib.checkpoint_dir(workdir)) if p.isdigit())
  for step in steps:  # each of them verifies: finite and as saved
    assert workdir_lib.load_trained(workdir, step).step == step


def test_a_second_process_on_the_same_workdir_is_refused(idx_dir, tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  with lock.hold(workdir):  # another run holds it (flock conflicts across open files)
    with pytest.raises(lock.WorkdirError, match=r"in use by another training process \(host "):
      train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), workdir)
  with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
    f.write("host gone, pid 1, since long ago")  # left by a killed run: nobody holds it
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), workdir)
  assert workdir_lib.load_trained(workdir, "latest").step == 8


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path):
  workdir = str(tmp_path / "new")
  config = small_config(str(tmp_path / "no_such_dir"))
  with pytest.raises(data_lib.DataError, match="does not exist"):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)


def test_resume_refuses_a_changed_seed_unless_allowed(idx_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), workdir)
  with pytest.raises(config_lib.ConfigError, match=r"--config.seed=1 differs from the 0 .*"
                     "allow_config_change=True"):
    train.train_and_evaluate(small_config(idx_dir, seed=1), workdir)
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=16), workdir)  # only longer: ok
  train.train_and_evaluate(
      small_config(idx_dir, num_train_steps=24, seed=1, allow_config_change=True), workdir)
  events = [
      r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "config_change"
  ]
  assert events == [{"step": 16, "split": "config_change", "changes": {"seed": [0, 1]}}]
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE)) as f:
    saved = json.load(f)
  assert saved["seed"] == 1
  assert saved["history"] == [{"step": 16, "changes": events[0]["changes"]}]
  assert workdir_lib.load_config(workdir).seed == 1


def run_experiment(idx_dir, workdir, *overrides):
  """Starts experiments/vae_mlp_fashion_mnist.py on the tests' small data (unbuffered output)."""
  args = [
      sys.executable,
      os.path.join(ROOT, "experiments", "vae_mlp_fashion_mnist.py"), "--workdir", workdir,
      f"--config.idx_dir={idx_dir}", "--config.batch_size=32", "--config.hidden_dim=32",
      "--config.latent_dim=4", "--config.progress_bar=False", "--config.log_every_steps=4",
      "--config.eval_every_steps=400", "--config.checkpoint_every_steps=8",
      "--config.steps_per_call=4", "--config.eval_batch_size=50", *overrides
  ]
  return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_sigterm_saves_and_the_resumed_run_ends_like_an_unbroken_one(idx_dir, tmp_path):
  """SIGTERM after the first checkpoint: the 88 steps and 11 checkpoints left take seconds, far
  longer than the signal takes to arrive."""
  unbroken, stopped = str(tmp_path / "unbroken"), str(tmp_path / "stopped")
  total = 96
  steps = f"--config.num_train_steps={total}"
  process = run_experiment(idx_dir, stopped, steps)
  first = pathlib.Path(workdir_lib.checkpoint_dir(stopped), "8")
  while not first.exists() and process.poll() is None:  # training is under way
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
  message = err.strip().splitlines()[-1]
  assert message.startswith("stopped by SIGTERM at step ") and "run the same command" in message
  at = int(message.split("at step ")[1].split(":")[0])
  assert 8 <= at < total and workdir_lib.load_trained(stopped, "latest").step == at
  for workdir in (stopped, unbroken):
    process = run_experiment(idx_dir, workdir, steps)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
  got, want = (workdir_lib.load_trained(w, "latest") for w in (stopped, unbroken))
  assert got.step == want.step == total
  chex.assert_trees_all_equal(arrays(got.state), arrays(want.state))


def test_a_read_only_workdir_is_refused_before_training_and_still_reads(
    idx_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), workdir)
  before = sorted(os.listdir(workdir))
  # What a user without write permission sees (the tests run as root, whom chmod does not stop).
  monkeypatch.setattr(lock.os, "access", lambda path, mode: not mode & os.W_OK)
  with pytest.raises(lock.WorkdirError, match="is not writable; choose a --workdir"):
    train.train_and_evaluate(small_config(idx_dir, num_train_steps=16), workdir)
  assert sorted(os.listdir(workdir)) == before
  assert workdir_lib.load_trained(workdir, "latest").step == 8


def test_unusable_workdirs_and_configs_are_one_clear_error(idx_dir, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  with pytest.raises(lock.WorkdirError, match="is a file, not a directory"):
    train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), str(a_file))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), workdir)
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w") as f:
    f.write('{"model": "vae_mlp", "seed": ')  # cut short
  with pytest.raises(config_lib.ConfigError, match="config.json cannot be read as JSON"):
    workdir_lib.load_trained(workdir)
  with pytest.raises(config_lib.ConfigError, match="config.json cannot be read as JSON"):
    train.train_and_evaluate(small_config(idx_dir, num_train_steps=16), workdir)


def signal_at(calls: int):
  """A `StopSignals.agreed` that answers SIGINT from its `calls`-th call on."""
  count = [0]

  def agreed(self) -> int | None:
    del self
    count[0] += 1
    return signal.SIGINT if count[0] >= calls else None

  return agreed


def test_sigint_in_the_last_chunk_saves_skips_the_final_evaluation_and_stops(
    idx_dir, tmp_path, monkeypatch):
  """16 steps in chunks of 4: a SIGINT seen at the last boundary saves step 16 and stops; the
  resumed run does the final evaluation (recorded once) and does not train."""
  workdir = str(tmp_path / "run")
  monkeypatch.setattr(signals_lib.StopSignals, "agreed", signal_at(4))
  with pytest.raises(signals_lib.Stopped, match="stopped by SIGINT at step 16") as stopped:
    train.train_and_evaluate(small_config(idx_dir), workdir)
  assert stopped.value.exit_code == 130
  records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records if r["split"] == "test"] == [8]
  assert workdir_lib.load_trained(workdir, "latest").step == 16
  monkeypatch.setattr(signals_lib.StopSignals, "agreed", lambda self: None)
  metrics = train.train_and_evaluate(small_config(idx_dir), workdir)
  tests = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "test"]
  assert [r["step"] for r in tests] == [8, 16]
  assert tests[-1]["neg_elbo"] == pytest.approx(metrics["neg_elbo"])
  # A signal after the last boundary (during the final evaluation) stops a finished run.
  monkeypatch.setattr(signals_lib.StopSignals, "agreed", signal_at(1))
  with pytest.raises(signals_lib.Stopped, match="after training ended at step 16"):
    train.train_and_evaluate(small_config(idx_dir), workdir)


def test_a_stop_signal_after_a_command_finished_says_so(tmp_path):
  """SIGINT once the command's work is done: exit 130 with the one line saying it finished."""
  code = ("import os, signal, time; from aigc_jax import entry; entry.begin('testing'); "
          "cm = entry.command(); cm.__enter__(); cm.__exit__(None, None, None); "
          "os.kill(os.getpid(), signal.SIGINT); time.sleep(10)")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        check=False)
  assert done.returncode == 130
  assert done.stderr.strip() == ("error: stopped by SIGINT after the command had finished: its "
                                 "output is complete")


def test_a_sweep_stopped_in_its_last_chunk_evaluates_its_members_when_resumed(
    idx_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "sweep")
  spec = sweep_spec.make_spec(small_config(idx_dir), ["learning_rate=1e-3,2e-3"])
  monkeypatch.setattr(signals_lib.StopSignals, "agreed", signal_at(4))
  with pytest.raises(signals_lib.Stopped, match="stopped by SIGINT at step 16"):
    sweep_train.run_sweep(spec, workdir)
  member = os.path.join(sweep_spec.member_dir(workdir, 1), "metrics.jsonl")
  assert [r["step"] for r in read_jsonl(member) if r["split"] == "test"] == [8]
  monkeypatch.setattr(signals_lib.StopSignals, "agreed", lambda self: None)
  sweep_train.run_sweep(spec, workdir)
  assert [r["step"] for r in read_jsonl(member) if r["split"] == "test"] == [8, 16]
  assert workdir_lib.load_trained(sweep_spec.member_dir(workdir, 1), "latest").step == 16
