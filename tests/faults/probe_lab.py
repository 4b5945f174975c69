"""The fault probes' workshop (the command is probes.py, the probes are in probe_inputs.py,
probe_faults.py and probes.py): a lab of tiny synthetic data and runs, the commands started as
subprocesses, and the verdicts judged from what they did.

Verdicts, worst first: INSECURE (a file outside the probe's own folders changed), SILENT-WRONG
(exit 0 with a wrong result or a half-written file, a swallowed stop signal, a checkpoint that no
longer loads), TRACEBACK (a traceback, an "Exception ignored", a crash, or more than one `error:`
line where one belongs), OTHER (another exit status or message than expected, a timeout, a
half-made folder or file left by a failed command), OK, SKIP (not possible on this machine; the
reason is given).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [p for p in (ROOT, os.path.dirname(HERE)) if p not in sys.path]

from helpers import write_blobs  # noqa: E402  (tests/)

VERDICTS = ("INSECURE", "SILENT-WRONG", "TRACEBACK", "OTHER", "OK", "SKIP")
EXIT_ERROR = 2
BASE_STEPS = 24  # the base run: checkpoints 8, 16 and 24, evaluated at 24
TINY = [
    "--config.batch_size=32", "--config.hidden_dim=32", "--config.latent_dim=4",
    "--config.progress_bar=False", "--config.steps_per_call=4", "--config.eval_batch_size=50",
    "--config.checkpoint_every_steps=8", "--config.num_sample_images=16",
    "--config.eval_iwae_samples=20", "--config.eval_iwae_examples=10"
]
NOISE = ("Traceback (most recent call last)", "Exception ignored", "Fatal Python error",
         "Check failure stack trace", "Event loop is closed")


@dataclasses.dataclass
class Result:
  verdict: str
  observed: str


def worst(*results: Result) -> Result:
  """The worst verdict of `results`, with all their observations, the worst ones first."""
  ranked = sorted(results, key=lambda r: VERDICTS.index(r.verdict))
  return Result(ranked[0].verdict, "; ".join(r.observed for r in ranked))


@dataclasses.dataclass
class Done:
  """A finished command: exit status (None: timed out, killed), stdout, stderr, wall time."""
  code: int | None
  out: str
  err: str
  seconds: float

  def errors(self) -> list[str]:
    return [line for line in self.err.splitlines() if line.startswith("error:")]

  def noise(self) -> int:
    crashed = self.code is not None and -self.code in (signal.SIGSEGV, signal.SIGABRT)
    return sum(self.err.count(n) for n in NOISE) + crashed + (self.code in (134, 139))

  def headline(self) -> str:
    """The line that says most: the first `error:` line, else a crash's, else stdout's last
    line, else stderr's last line that is not a log line."""
    err = self.err.splitlines()
    crash = [
        line for line in err
        if line.startswith(("F1",
                            "Fatal Python error")) or re.match(r"\w*(Error|Exception)\b", line)
    ] if self.noise() else []
    out = [line for line in self.out.splitlines() if line.strip()][-1:]
    rest = [line for line in err if line.strip() and line[:2] not in ("I1", "W1")][-1:]
    line = (self.errors() + crash + out + rest + ["(no output)"])[0]
    return line if len(line) <= 150 else line[:147] + "..."

  def summary(self) -> str:
    """Exit status, counts, wall time and the headline."""
    warnings = sum(line.startswith("W1") or "Warning:" in line for line in self.err.splitlines())
    return (f"exit {self.code}, {len(self.errors())} error line(s), {warnings} warning(s), "
            f"{self.noise()} traceback mark(s), {self.seconds:.0f} s: {self.headline()}")


def judge(done: Done, code: int = EXIT_ERROR, says: tuple[str, ...] = ()) -> Result:
  """OK for exit status `code` with nothing noisy on stderr and, for a failure, exactly one
  `error:` line that contains each of `says` (case-insensitive)."""
  seen = done.summary()
  if done.code is None:
    return Result("OTHER", f"timed out; {seen}")
  if done.noise() or (code and len(done.errors()) > 1):
    return Result("TRACEBACK", seen)
  if code and done.code == 0:
    return Result("SILENT-WRONG", f"exit 0 where a refusal belongs; {seen}")
  if done.code != code:
    return Result("OTHER", seen)
  if code and not done.errors():
    return Result("OTHER", f"no error: line; {seen}")
  missing = [s for s in says if code and s.lower() not in done.errors()[0].lower()]
  return Result("OTHER", f"the line lacks {missing}; {seen}") if missing else Result("OK", seen)


def fingerprint(root: str) -> dict[str, str]:
  """Every path under `root` (links not followed) -> its kind, mode and content's sha256."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      info = os.lstat(path)
      digest = ""
      if os.path.islink(path):
        digest = os.readlink(path)
      elif os.path.isfile(path):
        with open(path, "rb") as f:
          digest = hashlib.sha256(f.read()).hexdigest()
      out[os.path.relpath(path, root)] = f"{info.st_mode:o} {digest}"
  return out


def partial_files(workdir: str) -> list[str]:
  """What a failed write left half-made in `workdir`: temporary files and folders, empty files,
  PNGs cut short, metrics.jsonl lines that are not JSON."""
  found = []
  for folder, dirs, files in os.walk(workdir):
    for name in dirs + files:
      path = os.path.join(folder, name)
      rel = os.path.relpath(path, workdir)
      if "tmp" in name.lower():
        found.append(rel)
      elif name in dirs:
        continue
      elif os.path.getsize(path) == 0 and name != ".lock":
        found.append(f"{rel} (0 bytes)")
      elif name.endswith(".png") and not _read(path)[-12:].startswith(b"\0\0\0\0IEND"):
        found.append(f"{rel} (cut short)")
      elif name == "metrics.jsonl" and not all(map(_is_json, _read(path).splitlines())):
        found.append(f"{rel} (a line that is not JSON)")
  return found


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _is_json(line: bytes) -> bool:
  try:
    json.loads(line)
    return True
  except ValueError:
    return False


def saved_steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def make_idx(directory: str, train: int = 256, test: int = 64) -> str:
  """`helpers.write_blobs` in a new `directory`, as the tests' idx_dir fixture."""
  os.makedirs(directory, exist_ok=True)
  return write_blobs(directory, train, test)


STAND_IN = """
from aigc_jax.metrics import classifier as c, classifier_net as n, classifier_train as t
v, info = t.train(n.resolve_recipe(train_examples=256, epochs=1), progress=False)
c.save(c.cache_path(n.RECIPE), v, {**info, "key": n.recipe_key(n.RECIPE)})
"""


def xla_flags() -> str:
  """XLA_FLAGS with the suite's quick compiles (optimisation level 0) unless they set a level."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_backend_optimization_level" in flags:
    return flags
  return f"{flags} --xla_backend_optimization_level=0".strip()


WRAPPER = """import os, resource, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
if int(sys.argv[1]):
  resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]),) * 2)
os.execv(sys.argv[2], sys.argv[2:])"""

LOADER = """import hashlib, json, sys
import jax, numpy as np
from aigc_jax import workdir as workdir_lib
out = {}
for which in sys.argv[2:]:
  try:
    run = workdir_lib.load_trained(sys.argv[1], int(which) if which.isdigit() else which)
    digest = hashlib.sha256()
    players = [(p.params, p.opt_state, p.model_state) for p in run.state.players.values()]
    for leaf in map(np.asarray, jax.tree_util.tree_leaves(players)):
      digest.update(f"{leaf.dtype}{leaf.shape}".encode() + leaf.tobytes())
    out[which] = [run.step, digest.hexdigest()]
  except Exception as e:
    out[which] = [None, f"{type(e).__name__}: {e}"[:200]]
print(json.dumps(out))"""


class Lab:
  """A temporary folder with tiny IDX data, an `outside` folder of files no command may touch,
  a base run (trained once when first asked for), a classifier cache, and the commands' env."""

  def __init__(self, root: str):
    self.root = root
    self.idx = make_idx(os.path.join(root, "idx"))
    self.outside = os.path.join(root, "outside")
    os.makedirs(os.path.join(self.outside, "folder"))
    self.victim = os.path.join(self.outside, "victim")
    with open(self.victim, "w") as f:
      f.write("DATA\n")
    self.cache = os.path.join(root, "cache")  # AIGC_JAX_CACHE: no classifier until asked for
    self.env = {
        **os.environ, "JAX_PLATFORMS":
            "cpu", "AIGC_JAX_IDX_DIR":
                self.idx, "AIGC_JAX_CACHE":
                    self.cache, "PYTHONUNBUFFERED":
                        "1",
        "JAX_COMPILATION_CACHE_DIR":
            os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(root, "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS":
            "0", "XLA_FLAGS":
                xla_flags()
    }
    self.made: dict[str, object] = {}
    self.mounts: list[str] = []
    self._count = 0

  def path(self, name: str) -> str:
    """A new path (not created) under the lab's runs/ folder."""
    self._count += 1
    return os.path.join(self.root, "runs", f"{self._count:02d}_{name}")

  def folder(self, name: str) -> str:
    path = self.path(name)
    os.makedirs(path)
    return path

  def guarded(self) -> list[str]:
    """The folders no probe may change: outside/, the data, the base run once made."""
    return [self.outside, self.idx] + [p for p in (self.made.get("base"),) if p]

  def train_args(self, workdir: str, steps: int = BASE_STEPS, *extra: str,
                 experiment: str = "vae_mlp_fashion_mnist") -> list[str]:
    return [
        sys.executable,
        os.path.join(ROOT, "experiments",
                     f"{experiment}.py"), "--workdir", workdir, *TINY, "--config.log_every_steps=4",
        f"--config.eval_every_steps={steps}", f"--config.num_train_steps={steps}", *extra
    ]

  def module_args(self, module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"aigc_jax.{module}", *args]

  def start(self, args: list[str], env: dict | None = None,
            memory: int | None = None) -> subprocess.Popen:
    """Starts `args` in the repository with SIGINT at its default (as a terminal delivers it;
    a script's background job would inherit it ignored) and at most `memory` bytes of address
    space, through a small exec wrapper (no fork of this process's threads); stdout and stderr
    go to files (read by `finish`)."""
    out, err = (tempfile.TemporaryFile("w+", dir=self.root) for _ in range(2))
    process = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(memory or 0), *args], cwd=ROOT,
        env={**self.env, **(env or {})}, stdout=out, stderr=err, text=True)
    process.files, process.began = (out, err), time.time()
    return process

  def finish(self, process: subprocess.Popen, timeout: float = 90) -> Done:
    try:
      code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
      code = None
    texts = []
    for f in process.files:
      f.seek(0)
      texts.append(f.read())
      f.close()
    return Done(code, texts[0], texts[1], time.time() - process.began)

  def run(self, args: list[str], timeout: float = 90, **kw) -> Done:
    return self.finish(self.start(args, **kw), timeout)

  def loaded(self, workdir: str, *which: str) -> dict[str, list]:
    """{which: [step, sha256 of its arrays] or [None, error]} of each saved step of `workdir`
    and each of `which` ("latest", "best"), as a new process loads them."""
    wanted = [str(step) for step in saved_steps(workdir)] + list(which)
    if not wanted:
      return {}
    done = self.run([sys.executable, "-c", LOADER, workdir, *wanted], timeout=120)
    if done.code != 0:
      raise RuntimeError(f"loading the checkpoints of {workdir} failed: {done.err[-2000:]}")
    return json.loads(done.out.strip().splitlines()[-1])

  def once(self, key: str, make: Callable[[], object]) -> object:
    if key not in self.made:
      self.made[key] = make()
    return self.made[key]

  def trained(self, name: str, steps: int, *extra: str) -> str:
    """A finished run of `steps` steps (one of the `made`, not to be changed)."""

    def make():
      workdir = os.path.join(self.root, name)
      done = self.run(self.train_args(workdir, steps, *extra))
      if done.code != 0:
        raise RuntimeError(f"the {name} run failed: {done.err[-3000:]}")
      return workdir

    return self.once(name, make)

  def copy_base(self, name: str) -> str:
    """A copy of the base run (24 steps, checkpoints 8, 16, 24) to change."""
    workdir = self.path(name)
    shutil.copytree(self.trained("base", BASE_STEPS), workdir, symlinks=True)
    return workdir

  def classifier_cache(self) -> str:
    """A classifier cache holding a quick stand-in for the metrics' classifier (1 epoch on the
    lab's 256 images), filed under the default recipe; copy it before changing it."""

    def make():
      cache = os.path.join(self.root, "stand_in_cache")
      done = self.run([sys.executable, "-c", STAND_IN], env={"AIGC_JAX_CACHE": cache})
      if done.code != 0:
        raise RuntimeError(f"the stand-in classifier failed: {done.err[-3000:]}")
      return cache

    return self.once("stand_in_cache", make)

  def samples(self, name: str = "samples.npz", **arrays) -> str:
    """An .npz of the lab's first 64 train images (uint8), or of `arrays`."""
    path = os.path.join(self.root, name)
    if not arrays:
      with open(os.path.join(self.idx, "train-images-idx3-ubyte"), "rb") as f:
        arrays = {"images": np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:64]}
    np.savez(path, **arrays)
    return path

  def close(self) -> None:
    for mount in reversed(self.mounts):
      subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    if shutil.which("chattr"):
      subprocess.run(["chattr", "-R", "-i", self.root], capture_output=True, check=False)
    shutil.rmtree(self.root, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Probe:
  name: str
  expected: str
  run: Callable[[Lab], Result]
  fast: bool


PROBES: list[Probe] = []


def probe(name: str, expected: str, fast: bool = False):
  """Registers the decorated `f(lab) -> Result` as a probe."""

  def register(f):
    PROBES.append(Probe(name, expected, f, fast))
    return f

  return register


def refused_fresh(lab: Lab, args_of: Callable[[str], list[str]], says=(), **kw) -> Result:
  """Runs `args_of(workdir)` on a new workdir: one error line, exit 2, and no workdir left."""
  workdir = lab.path("fresh")
  result = judge(lab.run(args_of(workdir), **kw), says=says)
  if os.path.exists(workdir):
    left = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else "a file"
    result = worst(result, Result("OTHER", f"half-made workdir left: {left}"))
  return result


def either(done, says=()) -> Result:
  """A clean success, or a refusal of one line that contains `says`."""
  return judge(done, 0) if done.code == 0 else judge(done, says=says)


def kept(lab: Lab, workdir: str, result: Result, code: int | None = None) -> Result:
  """`result`, worse when `workdir` holds a half-written file (SILENT-WRONG after exit 0) or a
  checkpoint that no longer loads."""
  extra = []
  left = partial_files(workdir) if os.path.isdir(workdir) else []
  if left:
    extra.append(Result("SILENT-WRONG" if code == 0 else "OTHER", f"left {left[:4]}"))
  bad = [f"checkpoint {k} ({v[1]})" for k, v in lab.loaded(workdir).items() if v[0] is None]
  if bad:
    extra.append(Result("SILENT-WRONG", f"{bad[:2]} no longer load"))
  return worst(result, *extra)
