"""One command that tells a GPU or TPU owner what aigc_jax does on their machine.

python benchmarks/accelerator_check.py OUTDIR [--tiny] [--budget_s S]
(benchmarks/accelerator_check.sh installs the project's missing pure-Python dependencies from
wheels/ first)

Writes OUTDIR/accelerator_check.json and OUTDIR/accelerator_check.md, both rewritten after every
row, so that a check cut short still reports. The rows, in order of value (`bench.check.plan`),
run in a worker process that is stopped when --budget_s runs out (the row it was in is listed as
cut, the rest as skipped):
1. DCGAN b64, float32, against PyTorch eager and torch.compile: JAX matmul precision 'highest'
   against PyTorch with TF32 off, and JAX 'default' (TF32 on NVIDIA GPUs) against PyTorch TF32;
2. the MLP GAN and MLP VAE likewise; 3. bfloat16 against float32 at batch 1024;
4. one whole DCGAN training (20 epochs at batch 64): its time in training chunks apart from
   start-up, compilation and evaluation, then FID, precision and recall of 10,000 samples
   (Fashion-MNIST from AIGC_JAX_IDX_DIR or the Debian directory); the `accelerator` tests
   (tests/test_accelerator.py: per family the accelerator's step equals the CPU's, a bfloat16
   step runs, 2 devices equal 1; they skip on a CPU);
5. every other model at batch 64 and 1024.
A row that fails is recorded with its error and the check goes on; the exit status is 1 if a
row failed. `--tiny` shrinks every part (2 models at batch 8, the MLP VAE at 1024, one timed call
each, 10 training steps, 200 samples) so that the whole path runs on a CPU, under any
$AIGC_JAX_PLATFORM_DEFAULTS (tests/test_accelerator_check.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aigc_jax import backend  # noqa: E402
from aigc_jax.bench import check  # noqa: E402

NO_EVAL = "--config.eval_every_steps=1000000000"  # evaluate (and checkpoint) at the end only
FULL = dict(steps=50, warmup=5, min_calls=5, peak_size=4096,
            train=["--config.num_epochs=20", "--config.batch_size=64",
                   NO_EVAL], eval_samples=10_000)
TINY = dict(
    steps=2,
    warmup=0,
    min_calls=1,  # one timed call after the compiling one, which warms up
    peak_size=256,
    train=[
        "--config.num_train_steps=10", "--config.batch_size=8", NO_EVAL, *check.TINY_DCGAN,
        "--config.log_every_steps=5", "--config.eval_num_samples=200"
    ],
    eval_samples=200)
BUDGET_S = 420.0
ENV = {
    **os.environ, "PYTHONPATH": os.pathsep.join(filter(None,
                                                       [ROOT, os.environ.get("PYTHONPATH")]))
}


def accelerator_tests(out: str) -> dict:
  """Counts of the `accelerator` tests (run in a subprocess on the default backend)."""
  report = os.path.join(out, "accelerator_tests.xml")
  env = {**ENV, "AIGC_JAX_TEST_ACCELERATOR": "1"}
  subprocess.run([
      sys.executable, "-m", "pytest", "-q", "-m", "accelerator", "-p", "no:cacheprovider",
      f"--junitxml={report}",
      os.path.join(ROOT, "tests", "test_accelerator.py")
  ], cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  suite = next(ET.parse(report).getroot().iter("testsuite"))
  counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
  counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
  return counts


def has_torch() -> bool:
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def tests_row(out: str) -> dict:
  """`accelerator_tests`, with an error where one failed."""
  counts = accelerator_tests(out)
  bad = counts["failures"] + counts["errors"]
  return {
      **counts, **({"error": f"{bad} accelerator test(s) failed; see "
                             "accelerator_tests.xml"} if bad else {})
  }


def train_time(workdir: str) -> dict:
  """The training time of a run from its metrics.jsonl train records (steps / steps_per_second
  per logged chunk; a run evaluating and checkpointing only at its end has no other work in
  them): train_s, their sum; train_compile_s, the first chunk less its steps at the median
  per-step time of the others; train_steady_s; steps; steps_per_s (steady)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    train = [r for r in map(json.loads, f) if r.get("split") == "train"]
  steps = [b["step"] - a for a, b in zip([0] + [r["step"] for r in train], train)]
  seconds = [n / r["steps_per_second"] for n, r in zip(steps, train)]
  per_step = statistics.median(s / n for s, n in zip(seconds[1:] or seconds, steps[1:] or steps))
  compile_s = max(0.0, seconds[0] - steps[0] * per_step) if len(seconds) > 1 else 0.0
  return {
      "train_s": round(sum(seconds), 2), "train_compile_s": round(compile_s, 2),
      "train_steady_s": round(sum(seconds) - compile_s,
                              2), "steps": sum(steps), "steps_per_s": round(1 / per_step, 1)
  }


def dcgan_run(out: str, part: dict) -> dict:
  """Trains experiments/dcgan_fashion_mnist.py into a fresh OUTDIR/dcgan and evaluates it:
  `train_time`, wall_s (the training process: start-up, compilation, training, its last
  evaluation), eval_wall_s (the evaluation, the metrics' classifier's training included when
  none is cached), the metrics."""
  workdir = os.path.join(out, "dcgan")
  shutil.rmtree(workdir, ignore_errors=True)  # else a second check would resume the first's
  start = time.perf_counter()
  subprocess.run([
      sys.executable,
      os.path.join(ROOT, "experiments", "dcgan_fashion_mnist.py"), "--workdir", workdir,
      "--config.progress_bar=False", *part["train"]
  ], cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
  wall_s = time.perf_counter() - start
  done = subprocess.run([
      sys.executable, "-m", "aigc_jax.evaluate", "--workdir", workdir, "--checkpoint", "latest",
      "--num_samples",
      str(part["eval_samples"])
  ], cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
  metrics = json.loads(done.stdout.strip().splitlines()[-1])
  keep = ("fid", "fid_floor", "precision", "recall", "num_samples")
  return {
      "args": " ".join(part["train"]), **train_time(workdir), "wall_s": round(wall_s, 1),
      "eval_wall_s": round(time.perf_counter() - start - wall_s,
                           1), **{k: metrics[k] for k in keep if k in metrics}
  }


def rows_of(out: str, part: dict, tiny: bool) -> list[check.Row]:
  """The check's rows (`check.plan`) with what runs each."""
  with_torch, rows = has_torch(), []
  for group, spec in check.plan(tiny):
    if spec == "train":
      rows.append(check.Row("dcgan training", group, "train", lambda: dcgan_run(out, part)))
    elif spec == "tests":
      rows.append(check.Row("accelerator tests", group, "tests", lambda: tests_row(out)))
    else:
      rows.append(
          check.Row(spec.label, group, "bench",
                    lambda spec=spec: check.bench(spec, part, with_torch)))
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", metavar="OUTDIR")
  parser.add_argument("--tiny", action="store_true", help="shrink every part (a CPU smoke run)")
  parser.add_argument("--budget_s", type=float, default=BUDGET_S,
                      help=f"stop the check after this many seconds (default {BUDGET_S:g})")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  if not args.worker:  # the rows run in a worker that the budget can stop mid-row
    argv = sys.argv[1:] if argv is None else list(argv)
    status = check.supervise(
        [sys.executable, os.path.abspath(__file__), *argv, "--worker"], args.out, args.budget_s,
        env=ENV)
    with open(os.path.join(args.out, "accelerator_check.md")) as f:
      print(f.read())
    sys.exit(status)
  part = TINY if args.tiny else FULL
  start = time.perf_counter()
  header = {
      "devices": backend.describe_devices(), "tiny": args.tiny,
      "platform": backend.platform() + (" (emulated)" if backend.emulated() else ""),
      "budget_s": args.budget_s, "load_before": os.getloadavg()[0]
  }

  def write(records):
    check.write_files(args.out, {**header, "total_s": round(time.perf_counter() - start, 1)},
                      records)

  records = check.run_rows(rows_of(args.out, part, args.tiny), args.budget_s, write)
  sys.exit(1 if any(r["status"] == "failed" for r in records) else 0)


if __name__ == "__main__":
  main()
