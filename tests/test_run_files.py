"""A run's files are never written through a link planted in its folder, and a sweep's member
folders belong to the sweep: a plain run refuses them while it runs and after."""

import json
import os

import numpy as np
import pytest
from helpers import small_config
from PIL import Image
from test_reliability import run_experiment

from aigc_jax import data as data_lib
from aigc_jax import lock
from aigc_jax import plot
from aigc_jax import safe_files
from aigc_jax import sweep
from aigc_jax import sweep_spec
from aigc_jax import sweep_train
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers

SECRET = "DATA that is not the run's\n"


@pytest.fixture
def victim(tmp_path):
  """A file outside the run folder that a planted link points at."""
  path = tmp_path / "victim"
  path.write_text(SECRET)
  return str(path)


def plant(workdir, name, victim):
  os.makedirs(os.path.dirname(os.path.join(workdir, name)), exist_ok=True)
  os.symlink(victim, os.path.join(workdir, name))
  return os.path.join(workdir, name)


def read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_a_link_at_the_lock_is_refused_and_its_target_kept(tmp_path, victim):
  workdir = str(tmp_path / "run")
  plant(workdir, lock.LOCK_FILE, victim)
  with pytest.raises(lock.WorkdirError, match=r"\.lock is a symbolic link.*remove it"):
    with lock.hold(workdir):
      pass
  assert read(victim) == SECRET
  os.remove(os.path.join(workdir, lock.LOCK_FILE))
  os.link(victim, os.path.join(workdir, lock.LOCK_FILE))  # a hard link: same file, two names
  with pytest.raises(lock.WorkdirError, match=r"\.lock is a file with 2 hard links"):
    with lock.hold(workdir):
      pass
  assert read(victim) == SECRET
  dangling = str(tmp_path / "dangling")
  plant(dangling, lock.LOCK_FILE, str(tmp_path / "not_yet"))
  with pytest.raises(lock.WorkdirError, match="is a symbolic link"):
    with lock.hold(dangling):
      pass
  assert not os.path.exists(tmp_path / "not_yet")


@pytest.mark.curves  # the real plot.write_curves
def test_whole_files_replace_a_planted_link_never_its_target(tmp_path, victim):
  workdir = str(tmp_path / "run")
  for name in ("config.json.tmp", "config.json", "samples/x_latest.png", "plots/train.png"):
    plant(workdir, name, victim)
  config = small_config(str(tmp_path))
  workdir_lib.save_config(workdir, config)
  assert json.loads(read(os.path.join(workdir, "config.json")))["seed"] == config.seed
  png = os.path.join(workdir, "samples", "x_latest.png")
  writers.save_png(png, np.full((4, 5, 5, 1), 0.5, np.float32), ncols=2)
  assert Image.open(png).size == (2 * (2 * 5 + 2) + 2, 2 * (2 * 5 + 2) + 2)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write('{"step": 4, "split": "train", "loss": 1.0}\n')
  assert plot.write_curves(workdir) == [os.path.join(workdir, "plots", "train.png")]
  assert read(victim) == SECRET
  for name in ("config.json", "samples/x_latest.png", "plots/train.png"):
    assert not os.path.islink(os.path.join(workdir, name)), name
  assert os.path.islink(os.path.join(workdir, "config.json.tmp"))  # not used, not followed


def test_a_failed_whole_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = str(tmp_path / "sweep.json")
  safe_files.write_text(path, "old")

  def fail(f):
    f.write(b"half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    safe_files.atomic_write(path, fail)
  assert read(path) == "old" and os.listdir(tmp_path) == ["sweep.json"]
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)


def test_a_link_at_metrics_or_a_run_folder_is_refused(tmp_path, victim):
  workdir = str(tmp_path / "run")
  plant(workdir, "metrics.jsonl", victim)
  writer = writers.MetricWriter(workdir, tensorboard=False)
  with pytest.raises(lock.WorkdirError, match=r"metrics\.jsonl is a symbolic link"):
    writer.write(4, "train", {"loss": 1.0})
  with pytest.raises(lock.WorkdirError, match=r"metrics\.jsonl is a symbolic link"):
    writer.truncate_after(0)
  with pytest.raises(lock.WorkdirError, match=r"metrics\.jsonl is a symbolic link"):
    writer.write_event(4, "train", {"member": 0})
  writer.close()
  os.symlink(str(tmp_path), os.path.join(workdir, "samples"))
  with pytest.raises(lock.WorkdirError, match="samples is a symbolic link"):
    writers.save_png(os.path.join(workdir, "samples", "x.png"), np.zeros((1, 2, 2, 1)), 1)
  assert read(victim) == SECRET and not os.path.exists(tmp_path / "x.png")


@pytest.mark.slow
def test_the_cli_refuses_a_linked_lock_and_a_sweep_member(idx_dir, tmp_path, victim):
  workdir = str(tmp_path / "run")
  plant(workdir, lock.LOCK_FILE, victim)
  member = sweep_spec.member_dir(str(tmp_path / "sweep"), 0)
  os.makedirs(member)  # written by a sweep: kept, and marked as the sweep marks it
  with lock.hold(member, member_of=str(tmp_path / "sweep")):
    pass
  for folder, message in ((workdir, ".lock is a symbolic link"),
                          (member, f"{member} is a member of the sweep in {tmp_path / 'sweep'}; "
                           "resume the sweep with python -m aigc_jax.sweep")):
    _, err = run_experiment(idx_dir, folder, "--config.num_train_steps=8").communicate(timeout=300)
    assert err.strip().startswith("error:") and message in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
  assert read(victim) == SECRET
  assert not os.path.exists(workdir_lib.checkpoint_dir(member))


def test_a_sweep_that_fails_before_writing_leaves_no_directory(tmp_path):
  workdir = str(tmp_path / "sweep")
  spec = sweep_spec.make_spec(small_config(str(tmp_path / "no_such_dir")), ["beta=1,0.5"])
  with pytest.raises(data_lib.DataError, match="does not exist"):
    sweep_train.run_sweep(spec, workdir)
  assert not os.path.exists(workdir)


@pytest.mark.slow
def test_a_plain_run_refuses_a_sweep_member_while_and_after_it_runs(idx_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "sweep")
  member, intruded = sweep_spec.member_dir(workdir, 0), []
  real_setup = sweep_train.setup

  def setup_then_intrude(spec, directory, *args):  # runs while the sweep holds its members
    with pytest.raises(lock.WorkdirError, match=r"members/00 is a member of the sweep in"):
      train.train_and_evaluate(small_config(idx_dir), member)
    with pytest.raises(lock.WorkdirError, match="in use by another training process"):
      with lock.hold(member, member_of=workdir):  # a second sweep over the same folder
        pass
    intruded.append(True)
    return real_setup(spec, directory, *args)

  monkeypatch.setattr(sweep_train, "setup", setup_then_intrude)
  spec = sweep_spec.make_spec(small_config(idx_dir, num_train_steps=8, eval_every_steps=8),
                              ["beta=1,0.5"])
  sweep_train.run_sweep(spec, workdir)
  steps = [int(p) for p in os.listdir(workdir_lib.checkpoint_dir(member)) if p.isdigit()]
  assert intruded and steps == [8]  # the sweep's step only
  with pytest.raises(lock.WorkdirError, match="--export 0 --to RUNDIR"):
    train.train_and_evaluate(small_config(idx_dir, num_train_steps=16), member)
  assert [int(p) for p in os.listdir(workdir_lib.checkpoint_dir(member)) if p.isdigit()] == steps
  out = str(tmp_path / "exported")
  assert sweep.main(["--workdir", workdir, "--export", "0", "--to", out]) == 0
  assert not os.path.exists(os.path.join(out, lock.MEMBER_FILE))
  with lock.hold(out):  # an ordinary run folder of its own
    pass


@pytest.mark.parametrize("planted", ["link", "file"])
def test_a_linked_or_file_checkpoints_folder_is_refused(idx_dir, tmp_path, planted):
  outside, workdir = tmp_path / "outside", tmp_path / "run"
  outside.mkdir()
  workdir.mkdir()
  if planted == "link":
    (workdir / "checkpoints").symlink_to(outside)
  else:
    (workdir / "checkpoints").write_text("")
  what = "a symbolic link" if planted == "link" else "not a directory"
  with pytest.raises(safe_files.WorkdirError, match=f"checkpoints is {what}, where this run keeps"):
    train.train_and_evaluate(small_config(idx_dir), str(workdir))
  assert os.listdir(outside) == []
