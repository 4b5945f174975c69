"""What a command does when it is stopped or cannot write: a stop signal before the training loop
and a full disk, another user's file, a path too long, an unwritable cache or too little memory
each end in one `error:` line, leave no file half-written or empty, and keep earlier checkpoints."""

import errno
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import warnings

import jax
import numpy as np
import pytest
from helpers import small_config
from PIL import Image

from aigc_jax import config as config_lib
from aigc_jax import entry
from aigc_jax import lock
from aigc_jax import run_setup
from aigc_jax import safe_files
from aigc_jax import signals
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers
from aigc_jax.metrics import classifier as clf_lib
from aigc_jax.metrics import classifier_net as net_lib
from aigc_jax.metrics import classifier_train as clf_train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_writes_after(monkeypatch, folder, allowed: int) -> None:
  """`os.write` to files in `folder` writes `allowed` bytes in all, then raises ENOSPC (a disk
  filling up)."""
  real_write, left = os.write, [allowed]

  def write(fd, data):
    try:
      target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
      target = ""
    if not target.startswith(str(folder)):
      return real_write(fd, data)
    if not left[0]:
      raise ENOSPC
    n = real_write(fd, bytes(data[:left[0]]))
    left[0] -= n
    return n

  monkeypatch.setattr(os, "write", write)


# -- stop signals --------------------------------------------------------------------------------


def test_only_the_commands_take_over_the_stop_signals(monkeypatch):
  assert entry.started_as_entry_point(["python", "-u", os.path.join(ROOT, "experiments", "x.py")])
  assert entry.started_as_entry_point(["python", "-X", "dev", "-m", "aigc_jax.evaluate", "--x"])
  assert entry.started_as_entry_point(["python", "-maigc_jax.plot"])
  for argv in (["python", "-m", "pytest"], ["python", "-c", "import aigc_jax"], ["python"],
               ["ipykernel_launcher.py", "-f", "k.json"], ["python", "-m", "aigc_jax.bench"]):
    assert not entry.started_as_entry_point(argv), argv
  # A command's main called from Python (a test, a notebook) leaves Python's handlers alone.
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.excepthook
  monkeypatch.setattr(entry, "_doing", [("", "")])
  entry.begin("sampling", module="aigc_jax.sample")
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
          sys.excepthook) == before


def test_what_is_undone_on_a_signal_until_the_training_loop():
  undone = []
  with entry.undone_on_signal(lambda: undone.append("made"), until_training=True), \
       entry.undone_on_signal(lambda: 1 / 0), \
       entry.undone_on_signal(lambda: undone.append("temporary")):
    entry.undo_all()
    assert undone == ["temporary", "made"]  # newest first; one that fails is skipped
    with signals.StopSignals():  # the loop: a signal now saves, the run is no longer undone
      pass
    entry.undo_all()
    assert undone == ["temporary", "made", "temporary"]
  undone.clear()
  entry.undo_all()
  assert not undone


EXPERIMENT = os.path.join(ROOT, "experiments", "vae_mlp_fashion_mnist.py")
SMALL = [
    "--config.batch_size=32", "--config.hidden_dim=32", "--config.latent_dim=4",
    "--config.progress_bar=False", "--config.num_train_steps=16", "--config.steps_per_call=4",
    "--config.log_every_steps=4", "--config.eval_every_steps=4",
    "--config.checkpoint_every_steps=4", "--config.eval_batch_size=50",
    "--config.num_sample_images=16", "--config.eval_iwae_samples=20",
    "--config.eval_iwae_examples=10"
]


def experiment_config(idx_dir):
  """The config that `start_experiment` runs."""
  spec = importlib.util.spec_from_file_location("vae_mlp_experiment", EXPERIMENT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config_lib.apply_overrides(config, [f"--config.idx_dir={idx_dir}", *SMALL])
  return config


def start_experiment(idx_dir, workdir):
  """EXPERIMENT on the tests' small data, with SIGINT at its default, as a terminal has it."""
  reset = "import os,signal,sys;signal.signal(2,signal.SIG_DFL);os.execv(sys.argv[1],sys.argv[1:])"
  return subprocess.Popen([
      sys.executable, "-c", reset, sys.executable, EXPERIMENT, "--workdir", workdir,
      f"--config.idx_dir={idx_dir}", *SMALL
  ], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_once_locked(process, workdir, signum) -> str:
  """Sends `signum` as soon as `process` holds the workdir's lock (before its training loop);
  returns its stderr."""
  path, deadline = os.path.join(workdir, lock.LOCK_FILE), time.time() + 120
  while process.poll() is None and time.time() < deadline:
    try:
      with open(path) as f:
        if f"pid {process.pid}," in f.read():
          break
    except FileNotFoundError:
      pass
    time.sleep(0.002)
  process.send_signal(signum)
  return process.communicate(timeout=120)[1]


def assert_one_stop_line(err: str, signum: int) -> None:
  lines = err.strip().splitlines()
  errors = [line for line in lines if line.startswith("error:")]
  assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
  assert errors == lines[-1:], err[-3000:]
  name = signal.Signals(signum).name
  assert errors[0].startswith(f"error: stopped by {name} while ") and "run the same" in errors[0]


@pytest.mark.slow
def test_ctrl_c_before_the_training_loop_is_one_line_and_leaves_nothing(idx_dir, tmp_path):
  workdir = str(tmp_path / "runs" / "fresh")
  process = start_experiment(idx_dir, workdir)
  err = stop_once_locked(process, workdir, signal.SIGINT)
  assert process.returncode == 128 + signal.SIGINT, err[-3000:]
  assert_one_stop_line(err, signal.SIGINT)
  assert not os.path.exists(tmp_path / "runs")  # the folders it made are gone


# -- a full disk, another user's files, a path too long -------------------------------------------


def test_a_full_disk_leaves_no_part_of_an_appended_record(tmp_path, monkeypatch):
  path = str(tmp_path / "metrics.jsonl")
  safe_files.append_text(path, '{"step": 1}\n')
  fail_writes_after(monkeypatch, tmp_path, 5)
  with pytest.raises(safe_files.WriteError) as info:
    safe_files.append_text(path, '{"step": 2, "split": "train"}\n')
  message = str(info.value)
  assert message == (f"cannot write {path} (No space left on device); free space on its disk "
                     "or choose another --workdir")
  assert info.value.errno == errno.ENOSPC and isinstance(info.value, lock.WorkdirError)
  with open(path) as f:
    assert f.read() == '{"step": 1}\n'
  new = str(tmp_path / "new.jsonl")  # a file the failed append made is removed
  with pytest.raises(safe_files.WriteError):
    safe_files.append_text(new, "x\n")
  assert not os.path.exists(new)


def test_a_png_that_cannot_be_written_leaves_no_file(tmp_path, monkeypatch):

  def save(image, f, format):  # noqa: A002  (PIL's name)
    f.write(b"\x89PNG half")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(Image.Image, "save", save)
  path = str(tmp_path / "samples" / "samples_0000008.png")
  with pytest.raises(safe_files.WriteError, match=r"samples_0000008\.png \(No space left"):
    writers.save_png(path, np.zeros((4, 8, 8, 1)), 2)
  assert os.listdir(tmp_path / "samples") == []


def test_a_full_disk_leaves_no_empty_event_file(tmp_path, monkeypatch):
  fail_writes_after(monkeypatch, tmp_path, 0)
  with pytest.raises(
      safe_files.WriteError, match=r"tensorboard/events\.out\.tfevents\.[^ ]* \(No "
      r"space left on device\); free space"):
    writers.MetricWriter(str(tmp_path), tensorboard=True)
  assert os.listdir(tmp_path / "tensorboard") == []


def test_event_records_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
  writer = writers.MetricWriter(str(tmp_path), tensorboard=True)
  writer.write(4, "train", {"loss": 1.5})
  (events,) = glob.glob(str(tmp_path / "tensorboard" / "events*"))
  size = os.path.getsize(events)
  line = json.dumps({"step": 8, "split": "train", "loss": 1.25}) + "\n"
  fail_writes_after(monkeypatch, tmp_path, len(line) + 10)  # the line, then part of a record
  with pytest.raises(safe_files.WriteError, match="events"):
    writer.write(8, "train", {"loss": 1.25})
  writer.close()
  assert os.path.getsize(events) == size
  assert len(writers.MetricWriter(str(tmp_path), enabled=False).truncate_after(8)) == 2


@pytest.mark.parametrize("name", [".lock", "tensorboard"])
def test_another_users_file_is_one_line_naming_it(tmp_path, monkeypatch, name):
  workdir = str(tmp_path / "shared")
  os.makedirs(os.path.join(workdir, "tensorboard"))
  real_open = os.open

  def open_(path, *args, **kwargs):  # what chown to another user does, to a process not root
    if os.path.basename(os.path.dirname(path)) == name or os.path.basename(path) == name:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(safe_files.os, "open", open_)
  with pytest.raises(lock.WorkdirError) as info:
    with lock.hold(workdir):
      writers.MetricWriter(workdir).close()
  message = str(info.value)
  assert message.startswith(f"cannot open {os.path.join(workdir, name)}")
  assert "(Permission denied); another user owns it" in message and "choose another" in message


def test_a_workdir_path_too_long_is_refused_before_anything_is_made(tmp_path):
  workdir = os.path.join(str(tmp_path), *["d" * 200] * 20)
  with pytest.raises(
      lock.WorkdirError, match=r"bytes long; the files of a run need up to 256 "
      r"more, beyond .* choose a shorter --workdir"):
    with lock.hold(workdir):
      pass
  assert os.listdir(tmp_path) == []


@pytest.fixture(name="disk_full_run", scope="module")
def fixture_disk_full_run(idx_dir, tmp_path_factory):
  """(workdir, error) of a run whose disk fills up at its second evaluation (step 8), after the
  checkpoint at step 4."""
  workdir = str(tmp_path_factory.mktemp("disk_full") / "run")
  real_append = safe_files.append_text

  def append_text(path, text):
    if '"step": 8, "split": "test"' in text:
      raise safe_files.write_error(path, ENOSPC)
    real_append(path, text)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(safe_files, "append_text", append_text)
    with pytest.raises(safe_files.WriteError) as info:
      train.train_and_evaluate(experiment_config(idx_dir), workdir)
  return workdir, info.value


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_checkpoints_before(disk_full_run):
  workdir, error = disk_full_run
  assert str(error).startswith(f"cannot write {os.path.join(workdir, 'metrics.jsonl')} (No "
                               "space left on device)")
  assert workdir_lib.load_trained(workdir, "latest").step == 4
  assert not glob.glob(os.path.join(workdir, "**", "*.tmp"), recursive=True)


@pytest.mark.slow
def test_sigterm_while_resuming_is_one_line_and_keeps_the_checkpoints(disk_full_run, idx_dir,
                                                                      tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(disk_full_run[0], workdir)
  before = sorted(os.listdir(workdir))
  process = start_experiment(idx_dir, workdir)
  err = stop_once_locked(process, workdir, signal.SIGTERM)
  assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert_one_stop_line(err, signal.SIGTERM)
  assert sorted(os.listdir(workdir)) == before
  assert workdir_lib.load_trained(workdir, "latest").step == 4
  assert not glob.glob(os.path.join(workdir, "**", "*.tmp"), recursive=True)


# -- memory ---------------------------------------------------------------------------------------


def jax_out_of_memory(text="RESOURCE_EXHAUSTED: Out of memory allocating 26183560832 bytes."):
  """An error like jaxlib's JaxRuntimeError for an allocation that failed."""
  return type("JaxRuntimeError", (RuntimeError,), {})(text)


def test_out_of_memory_names_the_phase_and_what_to_lower():
  with pytest.raises(entry.OutOfMemory) as info:
    with entry.doing("compiling or running the training step", train.TRAIN_SIZES):
      with entry.doing("evaluating", train.EVAL_SIZES):
        raise jax_out_of_memory()
  assert str(info.value) == (
      "ran out of memory while evaluating (RESOURCE_EXHAUSTED: Out of memory allocating "
      f"26183560832 bytes.); lower {train.EVAL_SIZES}, or free memory on the device")
  with pytest.raises(entry.OutOfMemory, match="while sampling .*; lower --num"):
    with entry.doing("sampling", "--num"):
      np.empty(1)
      raise MemoryError("Unable to allocate 80.0 GiB for an array")
  with pytest.raises(RuntimeError, match="not memory"):  # other errors pass unchanged
    with entry.doing("sampling", "--num"):
      raise jax_out_of_memory("INTERNAL: not memory")
  assert entry.describe(jax_out_of_memory()).startswith("ran out of memory while ")
  assert entry.describe(OSError(errno.ENOSPC, "No space left on device", "/w/x")) == (
      "cannot use /w/x (No space left on device); free space on its disk or choose another "
      "--workdir")
  assert entry.describe(ValueError("a bug")) is None


@pytest.mark.slow
def test_a_run_out_of_memory_while_starting_says_so(idx_dir, tmp_path, monkeypatch):

  def restore_or_init(run, step=None):
    raise jax_out_of_memory()

  monkeypatch.setattr(run_setup, "restore_or_init", restore_or_init)
  with pytest.raises(
      entry.OutOfMemory, match="while initialising or restoring the state .*; "
      "lower the model's sizes"):
    train.train_and_evaluate(small_config(idx_dir), str(tmp_path / "run"))


# -- the classifier cache -------------------------------------------------------------------------


def test_an_unwritable_cache_is_refused_before_training(tmp_path, monkeypatch):

  def mkstemp(**unused):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

  monkeypatch.setattr(clf_lib.tempfile, "mkstemp", mkstemp)
  monkeypatch.setattr(clf_train_lib, "train", lambda *a, **k: pytest.fail("trained"))
  monkeypatch.setenv(clf_lib.CACHE_ENV, str(tmp_path / "cache"))
  with pytest.raises(
      clf_lib.CacheError, match=rf"cache {tmp_path / 'cache'} is not writable "
      r"\(Permission denied\).*set AIGC_JAX_CACHE to"):
    clf_lib.load_or_train(progress=False)


def test_a_classifier_that_cannot_be_saved_is_used_with_a_warning(tmp_path, monkeypatch):
  recipe = net_lib.resolve_recipe(conv_features=(2,), dense_features=4, epochs=1)
  model = net_lib.build_model(recipe)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1)))
  variables = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  info = {
      "recipe": recipe, "key": net_lib.recipe_key(recipe), "test_accuracy": 0.5,
      "train_seconds": 1.0
  }
  monkeypatch.setattr(clf_train_lib, "train", lambda *a, **k: (variables, info))

  def save(*unused):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(clf_lib, "save", save)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    clf = clf_lib.load_or_train(cache_dir=tmp_path, recipe=recipe, progress=False)
  assert clf.variables is variables and clf.test_accuracy == 0.5
  (warning,) = [w for w in caught if "could not save the classifier" in str(w.message)]
  assert "No space left on device" in str(warning.message) and "AIGC_JAX_CACHE" in str(
      warning.message)


def test_sample_refuses_a_num_that_cannot_fit_in_memory_before_sampling():
  """A --num whose images cannot be held at once is one OutOfMemory naming --num; the uint8
  conversion, a block at a time, is the whole-array one."""
  code = """
import numpy as np
from aigc_jax import entry, sample
sample.available_memory = lambda: 10**9
sample.check_memory(1000, (28, 28, 1))
try:
  sample.check_memory(10**6, (28, 28, 1))
except entry.OutOfMemory as e:
  print(e)
images = np.random.default_rng(0).uniform(-0.1, 1.1, (5000, 3, 3)).astype(np.float32)
want = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
assert np.array_equal(sample.to_uint8(images), want)
assert sample.available_memory() is None or sample.available_memory() > 0
"""
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.startswith("--num 1000000 needs about 6.6 GiB of memory at once (1000000 "
                                "images of (28, 28, 1)), more than the 0.9 GiB available; lower "
                                "--num"), done.stdout


def test_a_failed_entry_point_exits_without_waiting_for_threads_left_running():
  """What a failed checkpoint write leaves (orbax's threads): the error exit does not hang."""
  code = ("import threading, time; from aigc_jax import entry; entry.begin('testing'); "
          "threading.Thread(target=time.sleep, args=(300,)).start(); entry.exit_now(2)")
  began = time.time()
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 2 and time.time() - began < 60, done.stderr[-2000:]


def test_a_full_disk_at_a_new_run_s_lock_leaves_nothing(tmp_path, monkeypatch):
  fail_writes_after(monkeypatch, tmp_path, 0)
  with pytest.raises(safe_files.WriteError, match=r"\.lock \(No space left on device\)"):
    with lock.hold(str(tmp_path / "new" / "run")):
      pass
  assert os.listdir(tmp_path) == []


def test_a_link_at_a_sweep_s_members_folder_is_refused(tmp_path):
  sweep, outside = tmp_path / "sweep", tmp_path / "outside"
  sweep.mkdir()
  outside.mkdir()
  os.symlink(outside, sweep / "members")
  with pytest.raises(lock.WorkdirError, match=r"members is a symbolic link, where the sweep"):
    with lock.hold(str(sweep / "members" / "00"), member_of=str(sweep)):
      pass
  assert os.listdir(outside) == []


def test_opening_checkpoints_to_write_removes_unfinished_saves_only(idx_dir, tmp_path):
  workdir = str(tmp_path / "run")
  trainable = types.SimpleNamespace(best_metric="neg_elbo", best_mode="min")
  config = small_config(idx_dir)
  with workdir_lib.open_checkpoints(workdir, config, trainable) as ckpts:
    ckpts.save(4, {"w": np.arange(3, dtype=np.float32)})
  folder = workdir_lib.checkpoint_dir(workdir)
  for name in ("8.orbax-checkpoint-tmp", "12.orbax-checkpoint-tmp-1712345678"):
    os.makedirs(os.path.join(folder, name, "state"))
  open(os.path.join(folder, "notes.orbax-checkpoint-tmp"), "w").close()  # not a step's
  with workdir_lib.open_checkpoints(workdir, config, trainable, write=False) as ckpts:
    assert len(os.listdir(folder)) == 4  # a reader removes nothing
  with workdir_lib.open_checkpoints(workdir, config, trainable) as ckpts:
    assert sorted(os.listdir(folder)) == ["4", "notes.orbax-checkpoint-tmp"]
    assert ckpts.all_steps() == [4]
    np.testing.assert_array_equal(ckpts.restore({"w": np.zeros(3, np.float32)})["w"], [0, 1, 2])
