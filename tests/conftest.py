"""Shared fixtures. Tests that need real data skip cleanly where Fashion-MNIST is absent.

The suite runs on CPU devices, also on a machine with a GPU or TPU, and so do the processes it
starts. A run that selects the `accelerator` tests (`-m accelerator`) keeps JAX's default
backend instead; so does an explicit JAX_PLATFORMS. Tests marked `accelerator` skip unless the
default backend is a GPU or TPU (`AIGC_JAX_TEST_ACCELERATOR=1 make test` runs them on their own
after the suite, which keeps its CPU devices).

Under pytest-xdist (`make test` runs `-n`), each worker is a process with its own session
fixtures; what is expensive to build is built once per run in a directory that the workers share
(`shared_tmp_dir`), under a file lock, and what a test may write into is copied per worker. The
ports of the multi-host tests come from a block of ports that is the worker's own (`free_port`),
and PyTorch uses one OpenMP thread per worker.
All of them share one persistent compilation cache per run (`compilation_cache`). Training in the
test processes draws its curves only in the tests marked `curves` (`real_write_curves`).
"""

import contextlib
import fcntl
import itertools
import os
import pathlib
import shutil
import socket

import jax
import pytest

ACCELERATOR_ENV = "AIGC_JAX_TEST_ACCELERATOR"
ACCELERATOR_BACKENDS = ("gpu", "tpu")

# Under xdist the workers share the cores: one OpenMP thread each (PyTorch's, here and in the
# processes tests start), since OpenMP threads on oversubscribed cores slow down many-fold. Set
# before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("OMP_NUM_THREADS", "1")

# Four fake CPU devices for the data-parallel tests (set before JAX starts its backend; the other
# tests run on the first device as before).
jax.config.update("jax_num_cpu_devices", 4)

import helpers  # noqa: E402  (tests/)

from aigc_jax import data as data_lib  # noqa: E402

FASHION_DIR = data_lib.DATASETS["fashion_mnist"].debian_dir


def has_fashion_mnist() -> bool:
  return os.path.isdir(FASHION_DIR) and any(
      name.startswith("t10k-labels") for name in os.listdir(FASHION_DIR))


def worker_index() -> int:
  """This xdist worker's number (gw3 -> 3); 0 outside xdist."""
  worker = os.environ.get("PYTEST_XDIST_WORKER", "")
  return int(worker[2:]) if worker.startswith("gw") else 0


def shared_tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """The run's base temporary directory, shared by all xdist workers (each worker's own
  basetemp is a subdirectory of it); the basetemp itself without xdist."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def file_lock(path: pathlib.Path):
  """An exclusive lock on `path` (created) across processes, released on exit."""
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> pathlib.Path:
  """`<shared tmp>/<name>`, filled by `build(path)` by the first worker that asks; the others
  wait for it and reuse it. Treat it as read-only: copy it before writing into it."""
  shared = shared_tmp_dir(tmp_path_factory)
  path, done = shared / name, shared / f"{name}.done"
  with file_lock(shared / f"{name}.lock"):
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # a build that failed part-way
      path.mkdir()
      build(path)
      done.touch()
  return path


# JAX's persistent compilation cache, one per run: XLA:CPU compiling is most of the suite's time,
# and most programs are compiled again and again (each training run jits its steps anew, each
# process a test starts compiles what the others did). Every program is cached whatever its
# compile time and size. No size limit: a limit turns on jax's eviction, whose lock and
# directory scan at every write cost more than they save. An entry read while another process
# is still writing it fails to decompress, which jax turns into a warning and a compile. A hit
# is the executable that the same program, options and devices compiled to, so results are
# bitwise those of a compile.
COMPILATION_CACHE_OPTIONS = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"
}


@pytest.fixture(name="compilation_cache", scope="session", autouse=True)
def fixture_compilation_cache(tmp_path_factory) -> str:
  """The run's compilation cache directory, shared by the xdist workers, in use in this process
  and, through os.environ, in the processes that tests start. A JAX_COMPILATION_CACHE_DIR set
  before the run is kept (a cache that outlives runs)."""
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(
      shared_tmp_dir(tmp_path_factory) / "jax_compilation_cache")
  for name, value in {"JAX_COMPILATION_CACHE_DIR": path, **COMPILATION_CACHE_OPTIONS}.items():
    value = os.environ.setdefault(name, value)
    jax.config.update(
        name.lower(),
        int(value)
        if name.endswith("_BYTES") else float(value) if name.endswith("_SECS") else value)
  return path


@pytest.fixture(name="real_write_curves", scope="session", autouse=True)
def fixture_real_write_curves():
  """For the whole run, training in this process draws no curves (`plot.write_curves` does
  nothing): matplotlib takes about a second a picture at every evaluation, more than most tests'
  training, and only the tests marked `curves` check the pictures (they get the real function,
  which this yields). Processes that tests start draw theirs."""
  from aigc_jax import plot  # pylint: disable=g-import-not-at-top
  real = plot.write_curves
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(plot, "write_curves", lambda workdir: [])
    yield real


@pytest.fixture(autouse=True)
def fixture_curves_when_marked(request, real_write_curves, monkeypatch) -> None:
  """The real `plot.write_curves` for a test marked `curves`."""
  if request.node.get_closest_marker("curves") is not None:
    from aigc_jax import plot  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(plot, "write_curves", real_write_curves)


@pytest.fixture(name="idx_dir", scope="session")
def fixture_idx_dir(tmp_path_factory) -> str:
  """A tiny IDX dataset (`helpers.write_blobs`), built once per run; tests only read it."""
  return str(build_once(tmp_path_factory, "idx_blobs", helpers.write_blobs))


@pytest.fixture(name="cache_dir", scope="session")
def fixture_cache_dir(tmp_path_factory):
  """A metrics cache whose default-recipe classifier is a quick stand-in (2 epochs on 2,048
  images): point AIGC_JAX_CACHE here to evaluate GANs without the full classifier.

  Trained once per run; each xdist worker gets its own copy, since evaluations write their
  floors beside the classifier."""
  # pylint: disable=g-import-not-at-top
  from aigc_jax.metrics import classifier as clf_lib
  from aigc_jax.metrics import classifier_net as net_lib
  from aigc_jax.metrics import classifier_train as train_lib

  def build(cache):
    variables, info = train_lib.train(net_lib.resolve_recipe(train_examples=2048, epochs=2),
                                      progress=False)
    clf_lib.save(clf_lib.cache_path(net_lib.RECIPE, cache), variables,
                 {**info, "key": net_lib.recipe_key(net_lib.RECIPE)})

  trained = build_once(tmp_path_factory, "stand_in_classifier_cache", build)
  cache = tmp_path_factory.mktemp("cache")
  shutil.copytree(trained, cache, dirs_exist_ok=True)
  return str(cache)


# Ports for processes that a test starts: each xdist worker has its own block, below the
# kernel's ephemeral range (32768+ on Linux), so no two workers, and no port the kernel hands
# out for bind(0) or connect(), can be the same.
PORT_BASE, PORT_BLOCK = 20000, 250
_next_port = itertools.count()


def free_port() -> int:
  """A port of this worker's block that is free now; successive calls cycle through the block."""
  block = PORT_BASE + PORT_BLOCK * (worker_index() % 40)
  for _ in range(PORT_BLOCK):
    port = block + next(_next_port) % PORT_BLOCK
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
    return port
  raise RuntimeError(f"no free port in {block}..{block + PORT_BLOCK - 1}")


needs_fashion_mnist = pytest.mark.skipif(
    not has_fashion_mnist(),
    reason=f"Fashion-MNIST not in {FASHION_DIR} (make setup installs dataset-fashion-mnist)")


def selects_accelerator(config: pytest.Config) -> bool:
  """True when the run asks for the accelerator tests (`-m` naming the mark un-negated)."""
  words = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ").split()
  return any(
      word == "accelerator" and (i == 0 or words[i - 1] != "not") for i, word in enumerate(words))


# XLA:CPU compiling is most of the suite's time, and LLVM's optimisation is most of that (random
# number generation alone, in every init, takes seconds at the default level). The suite's
# programs are tiny, so level 0 saves far more in building them than it costs in running them.
# Users' runs keep XLA's default; a level already in XLA_FLAGS is kept.
TEST_XLA_FLAG = "--xla_backend_optimization_level=0"


def cpu_xla_flags(flags: str) -> str:
  """`flags` with the suite's XLA:CPU optimisation level unless they set one."""
  if "--xla_backend_optimization_level" in flags:
    return flags
  return f"{flags} {TEST_XLA_FLAG}".strip()


def xla_level_flag() -> str:
  """The optimisation-level flag of this process's XLA_FLAGS (the suite's when none): what a
  process that a test starts with XLA_FLAGS of its own needs to compile as this one does."""
  flags = cpu_xla_flags(os.environ.get("XLA_FLAGS", "")).split()
  return next(f for f in flags if f.startswith("--xla_backend_optimization_level"))


def pytest_configure(config: pytest.Config) -> None:
  """Pins this process and its subprocesses to CPU, compiling at the suite's optimisation level,
  before JAX starts a backend."""
  if selects_accelerator(config) or os.environ.get("JAX_PLATFORMS"):
    return
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""))
  jax.config.update("jax_platforms", "cpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
  """Skips the `accelerator` tests where the default backend is neither GPU nor TPU."""
  marked = [item for item in items if item.get_closest_marker("accelerator")]
  if not marked or jax.default_backend() in ACCELERATOR_BACKENDS:
    return
  skip = pytest.mark.skip(reason=f"needs a GPU or TPU; the default backend is "
                          f"{jax.default_backend()} (see {ACCELERATOR_ENV} in conftest)")
  for item in marked:
    item.add_marker(skip)
