"""Probes of faults around a run (see probes.py): a plain run in a sweep's member folder, stop
signals before and during training and in the other commands, a full disk, immutable files (what
a root user meets as another user's files), too little memory, noise on stderr, plots."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

from probe_lab import BASE_STEPS
from probe_lab import ROOT
from probe_lab import Lab
from probe_lab import Result
from probe_lab import judge
from probe_lab import kept
from probe_lab import make_idx
from probe_lab import probe
from probe_lab import saved_steps
from probe_lab import worst

SIGNAL_STEPS = 600  # about 10 s of training after about 5 s of starting

# -- sweeps: a plain run in a member's folder -----------------------------------------------------


def sweep_args(lab: Lab, workdir: str, steps: int = 16) -> list[str]:
  return (lab.module_args("sweep", os.path.join("experiments", "vae_mlp_fashion_mnist.py")) +
          lab.train_args(workdir, steps)[2:] + ["--vary", "learning_rate=1e-3,2e-3"])


@probe(
    "sweep_member_plain_run", "the plain run refused (exit 2, one line) while the sweep runs "
    "and after; the sweep exits 0, its member's records not doubled")
def _sweep_member(lab: Lab) -> Result:
  workdir = lab.path("sweep")
  member = os.path.join(workdir, "members", "00")
  sweep = lab.start(sweep_args(lab, workdir, 64))
  while not os.path.isdir(member) and sweep.poll() is None:
    time.sleep(0.05)
  during = judge(lab.run(lab.train_args(member, 16)), says=("member",))
  results = [during, judge(lab.finish(sweep), 0)]
  results.append(judge(lab.run(lab.train_args(member, 16)), says=("member",)))
  with open(os.path.join(member, "metrics.jsonl")) as f:
    keys = [(r.get("step"), r.get("split")) for r in map(json.loads, f)]
  if len(keys) != len(set(keys)):
    results.append(Result("SILENT-WRONG", f"{len(keys) - len(set(keys))} records doubled"))
  return worst(*results)


# -- stop signals --------------------------------------------------------------------------------


def stopped(done, signum: int) -> Result:
  """OK for exit 128 + signum with one line saying so, and nothing noisy."""
  seen = done.summary()
  if done.code == 0:
    return Result("SILENT-WRONG", f"the signal was swallowed: exit 0; {seen}")
  if done.noise() or len(done.errors()) > 1:
    return Result("TRACEBACK", seen)
  if done.code != 128 + signum or not re.search(r"stopped by|second SIG", done.err + done.out):
    return Result("OTHER", seen)
  return Result("OK", seen)


def signal_run(lab: Lab, args: list[str], workdir: str, signum: int, at: float,
               after: Callable[[str], bool] | None = None, twice: bool = False,
               sweep: bool = False) -> Result:
  """Sends `signum` `at` s after the start (or after `after(workdir)` holds), then checks what
  is left and (not for a `sweep`) that the same command resumes to the unbroken run's state."""
  process = lab.start(args)
  while after and not after(workdir) and process.poll() is None:
    time.sleep(0.01)
  time.sleep(at)
  if process.poll() is not None:
    return worst(judge(lab.finish(process), 0), Result("OK", "ended before the signal"))
  finished = "outputs in" in (process.files[0].seek(0) or process.files[0].read())
  process.send_signal(signum)
  if twice:
    time.sleep(0.05)
    process.send_signal(signum)
  done = lab.finish(process, 120)
  if finished:  # the window after the last line: sigint_as_the_run_ends
    return Result("TRACEBACK" if done.noise() else "OK", f"the run had printed its last line "
                  f"before the signal; {done.summary()}")
  result = stopped(done, signum)
  if os.path.exists(workdir) and not saved_steps(workdir):
    result = worst(result, Result("OTHER", f"half-made workdir left: {os.listdir(workdir)}"))
  if sweep or not saved_steps(workdir):
    return result
  result = kept(lab, workdir, result)
  resumed = judge(lab.run(args), 0)
  want = lab.once(
      "signal_reference_loaded",
      lambda: lab.loaded(lab.trained("signal_reference", SIGNAL_STEPS), "latest")["latest"])
  got = lab.loaded(workdir, "latest")["latest"]
  if got != want:
    resumed = worst(
        resumed,
        Result("SILENT-WRONG", f"resumed to step {got[0]}, not bitwise the "
               f"unbroken run's step {want[0]}"))
  return worst(result, resumed)


def _signal_probe(signum: int, at: float, **kw):

  def run(lab: Lab) -> Result:
    workdir = lab.path("signal")
    return signal_run(lab, lab.train_args(workdir, SIGNAL_STEPS), workdir, signum, at, **kw)

  return run


for _sig in (signal.SIGINT, signal.SIGTERM):
  for _at in (0.5, 1, 2, 3, 5, 10):
    for _try in ("ab" if _sig == signal.SIGINT else "a"):
      probe(
          f"{_sig.name.lower()}_at_{_at}s_{_try}", "exit 128+signal, one line; nothing "
          "half-made, or checkpoints that load and resume bitwise", fast=_at == 1 and
          _try == "a")(_signal_probe(_sig, _at))
  probe(f"{_sig.name.lower()}_after_first_checkpoint", "exit 128+signal, one line; resumes "
        "bitwise")(_signal_probe(_sig, 0.3, after=saved_steps))
probe("sigint_twice_after_first_checkpoint", "exit 130 at once, one line; the checkpoints load, "
      "resume bitwise")(_signal_probe(signal.SIGINT, 0.3, after=saved_steps, twice=True))


def last_step_logged(workdir: str) -> bool:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return f'"step": {SIGNAL_STEPS - 4}, "split": "train"' in f.read()


probe("sigint_in_the_last_chunk", "exit 130, one line (not the final evaluation and exit 0); "
      "resumes bitwise")(_signal_probe(signal.SIGINT, 0, after=last_step_logged))


@probe("sigint_sweep_after_first_checkpoint", "exit 130, one line; the sweep resumes, exit 0")
def _sigint_sweep(lab: Lab) -> Result:
  workdir = lab.path("sweep")
  result = signal_run(lab, sweep_args(lab, workdir, 64), workdir, signal.SIGINT, 0.3,
                      after=saved_steps, sweep=True)
  return worst(result, judge(lab.run(sweep_args(lab, workdir, 64)), 0))


def command_signal(lab: Lab, args: list[str], when: str, at: float, out: str = "") -> Result:
  """SIGINT `at` s after the output shows `when`: exit 130, one line, nothing in `out`'s folder;
  or exit 0 when the command ended before the signal."""
  process = lab.start(args)
  while process.poll() is None and time.time() - process.began < 120:
    if any(when in (f.seek(0) or f.read()) for f in process.files):
      break
    time.sleep(0.02)
  time.sleep(at)
  if process.poll() is not None:
    return worst(judge(lab.finish(process), 0), Result("OK", "ended before the signal"))
  process.send_signal(signal.SIGINT)
  result = stopped(lab.finish(process, 60), signal.SIGINT)
  left = os.listdir(os.path.dirname(out)) if out else []
  return worst(result, Result("OTHER", f"left {left}")) if left else result


@probe("sigint_as_the_run_ends", "exit 0, or exit 130, one line; never killed by the signal")
def _sigint_at_the_end(lab: Lab) -> Result:
  return command_signal(lab, lab.train_args(lab.path("ending"), 16), "outputs in", 0)


@probe("sigint_evaluate_during_nll_iwae", "exit 130, one line")
def _sigint_evaluate(lab: Lab) -> Result:
  args = lab.module_args("evaluate", "--workdir", lab.trained("base", BASE_STEPS), "--iwae_samples",
                         "200000", "--iwae_examples", "64")
  return command_signal(lab, args, "nll_iwae", 0.5)


for _at, _what in ((0.3, "sampling"), (6, "writing")):

  def _sigint_sample(lab: Lab, at=_at) -> Result:
    out = os.path.join(lab.folder("sample"), "s.npz")
    args = lab.module_args("sample", "--workdir", lab.trained("base", BASE_STEPS), "--num",
                           "300000", "--out", out)
    return command_signal(lab, args, "sample.py", at, out)

  probe(f"sigint_sample_while_{_what}", "exit 130, one line; no --out file, no temporary file",
        fast=_at < 1)(_sigint_sample)

# -- a full disk, immutable files, too little memory ----------------------------------------------


def tmpfs(lab: Lab, kib: int, fill: bool = True) -> str | None:
  """A new tmpfs of `kib` KiB (None where it cannot be mounted), filled up unless not `fill`."""
  path = lab.folder("disk")
  if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", path],
                    capture_output=True, check=False).returncode:
    return None
  lab.mounts.append(path)
  if fill:
    fill_up(path)
  return path


def on_tmpfs(kib: int, fill: bool = True):
  """Runs the decorated `f(lab, disk) -> Result` on a new tmpfs of `kib` KiB (filled up unless
  not `fill`) as a probe `f(lab)`; SKIP where tmpfs cannot be mounted."""

  def wrap(f: Callable[[Lab, str], Result]) -> Callable[[Lab], Result]:

    def run(lab: Lab) -> Result:
      disk = tmpfs(lab, kib, fill)
      return Result("SKIP", "mount -t tmpfs does not work here") if disk is None else f(lab, disk)

    return run

  return wrap


def fill_up(disk: str) -> None:
  """Writes a file into `disk` until it is full."""
  with open(os.path.join(disk, "filler"), "wb", buffering=0) as f:
    try:
      while True:
        f.write(bytes(4096))
        f.flush()
    except OSError:
      pass


@probe("disk_full_new_run", "exit 2, one line naming the file; no workdir left", fast=True)
@on_tmpfs(256)
def _disk_new(lab: Lab, disk: str) -> Result:
  workdir = os.path.join(disk, "run")
  result = judge(lab.run(lab.train_args(workdir)))
  left = [Result("OTHER", f"left {os.listdir(workdir)}")] if os.path.exists(workdir) else []
  return worst(result, *left)


@probe("disk_full_on_resume", "exit 2, one line naming the file; checkpoints 8-24 still load, "
       "no partial file", fast=True)
@on_tmpfs(4096, fill=False)
def _disk_resume(lab: Lab, disk: str) -> Result:
  workdir = shutil.copytree(lab.trained("base", BASE_STEPS), os.path.join(disk, "run"))
  fill_up(disk)
  done = lab.run(lab.train_args(workdir, BASE_STEPS + 16))
  return kept(lab, workdir, judge(done), done.code)


for _kib in (600, 1000, 1400):

  @on_tmpfs(_kib, fill=False)
  def _disk_mid(lab: Lab, disk: str) -> Result:
    workdir = os.path.join(disk, "run")
    done = lab.run(lab.train_args(workdir, 40))
    return kept(lab, workdir, judge(done), done.code)

  probe(f"disk_full_mid_run_{_kib}k", "exit 2, one line naming the file; the checkpoints saved "
        "load, no partial file")(_disk_mid)


@probe("disk_full_sample_out", "exit 2, one line; no partial --out", fast=True)
@on_tmpfs(256)
def _disk_sample(lab: Lab, disk: str) -> Result:
  out = os.path.join(disk, "s.npz")
  done = lab.run(
      lab.module_args("sample", "--workdir", lab.trained("base", BASE_STEPS), "--num", "64",
                      "--out", out))
  return kept(lab, disk, judge(done, says=("s.npz",)), done.code)


IMMUTABLE = {  # probe -> (path in a copy of the base run made immutable, what the line names)
    "immutable_lock": (".lock", ".lock"),
    "immutable_metrics_jsonl": ("metrics.jsonl", "metrics.jsonl"),
    "immutable_config_json": ("config.json", "config.json"),
    "immutable_tensorboard_folder": ("tensorboard", "tensorboard"),
    "immutable_samples_folder": ("samples", "samples"),
    "immutable_checkpoints_folder": ("checkpoints", "checkpoints"),
    "immutable_workdir": ("", "writ"),
}
for _name, (_path, _says) in IMMUTABLE.items():

  def _immutable(lab: Lab, path=_path, says=_says) -> Result:
    workdir = lab.copy_base("immutable")
    if subprocess.run(["chattr", "+i", os.path.join(workdir, path)], capture_output=True,
                      check=False).returncode:
      return Result("SKIP", "chattr +i does not work here (as for another user's files)")
    done = lab.run(lab.train_args(workdir, BASE_STEPS + 8))
    subprocess.run(["chattr", "-R", "-i", workdir], capture_output=True, check=False)
    return kept(lab, workdir, judge(done, says=(says,)), done.code)

  probe(_name, "exit 2, one line naming it; the checkpoints still load",
        fast=_name == "immutable_lock")(_immutable)


@probe("oom_dcgan_batch_60000_ulimit_3gb", "exit 2, one line: what ran out, what to lower")
def _oom_dcgan(lab: Lab) -> Result:
  idx = lab.once("idx_60000", lambda: make_idx(os.path.join(lab.root, "idx_60000"), 60000, 1000))
  args = [
      sys.executable,
      os.path.join(ROOT, "experiments", "dcgan_fashion_mnist.py"), "--workdir",
      lab.path("oom"), f"--config.idx_dir={idx}", "--config.batch_size=60000",
      "--config.num_train_steps=2", "--config.progress_bar=False"
  ]
  done = lab.run(args, memory=3_000_000_000, env={"AIGC_JAX_CACHE": lab.classifier_cache()})
  return judge(done, says=("memory", "lower"))


@probe("oom_sample_num_ulimit_3gb", "exit 2, one line: what ran out, what to lower", fast=True)
def _oom_sample(lab: Lab) -> Result:
  out = os.path.join(lab.folder("sample"), "s.npz")
  done = lab.run(
      lab.module_args("sample", "--workdir", lab.trained("base", BASE_STEPS), "--num", "20000000",
                      "--out", out), memory=3_000_000_000)
  return judge(done, says=("memory", "--num"))


# -- stderr noise on success, metrics.jsonl and plots ----------------------------------------------


@probe("sample_while_training_saves", "every sample exits 0 with nothing noisy on stderr")
def _sample_while_training(lab: Lab) -> Result:
  workdir = lab.path("busy")
  training = lab.start(lab.train_args(workdir, 2 * SIGNAL_STEPS))
  while not saved_steps(workdir) and training.poll() is None:
    time.sleep(0.05)
  results = []
  for i in range(3):
    out = os.path.join(lab.root, f"busy_{i}.npz")
    args = lab.module_args("sample", "--workdir", workdir, "--checkpoint", "latest", "--num", "8",
                           "--out", out)
    results.append(judge(lab.run(args), 0))
  return worst(judge(lab.finish(training), 0), *results)


@probe("metrics_jsonl_blank_and_garbage_lines", "plot and the resumed run exit 0, quietly",
       fast=True)
def _metrics_garbage(lab: Lab) -> Result:
  workdir = lab.copy_base("metrics")
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('\n\x00\xff garbage\n{"step": "x", "split": "train", "loss": [1]}\n[1, 2]\n')
  plotted = judge(
      lab.run(
          lab.module_args("plot", "--workdir", workdir, "--split", "train", "--out",
                          os.path.join(workdir, "c.png"))), 0)
  return worst(plotted, judge(lab.run(lab.train_args(workdir, BASE_STEPS + 8)), 0))


@probe("plot_without_metrics", "exit 2, one line", fast=True)
def _plot_empty(lab: Lab) -> Result:
  workdir = lab.folder("empty")
  return judge(
      lab.run(lab.module_args("plot", "--workdir", workdir, "--out",
                              os.path.join(workdir, "c.png"))), says=("metrics.jsonl",))
