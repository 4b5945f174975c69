"""One command that tells a GPU or TPU owner what aigc_jax does on their machine.

python benchmarks/accelerator_check.py OUTDIR [--tiny]   (benchmarks/accelerator_check.sh
installs the project's missing pure-Python dependencies from wheels/ first)

Writes OUTDIR/accelerator_check.json and OUTDIR/accelerator_check.md with:
- the backend and devices;
- the `accelerator` tests (tests/test_accelerator.py): per family the accelerator's step equals
  the CPU's, a bfloat16 step runs, 2 devices equal 1 (they skip on a CPU);
- the step benchmark of every model at batch 64 and 1024, float32 and bfloat16, with the float32
  PyTorch reference beside it where torch is installed and the model has one
  (`aigc_jax.bench.torch_reference.MODELS`): eager, and `torch.compile`d for the MLP GAN, DCGAN
  and MLP VAE at batch 64;
- one whole DCGAN training (20 epochs at batch 64) with its wall time, then FID, precision and
  recall of 10,000 EMA samples (Fashion-MNIST from AIGC_JAX_IDX_DIR or the Debian directory).
`--tiny` shrinks every part (2 models at batch 8, 20 training steps, 200 samples) so that the
whole path runs on a CPU (tests/test_accelerator_check.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aigc_jax import backend  # noqa: E402
from aigc_jax.bench import presets  # noqa: E402
from aigc_jax.bench import timing  # noqa: E402
from aigc_jax.bench import torch_reference  # noqa: E402

# compiled: the (model, batch) runs that also time torch.compile'd PyTorch (compiling is slow).
FULL = dict(models=None, batches=(64, 1024), steps=50, warmup=5, peak_size=4096,
            compiled={("gan_mlp", 64), ("dcgan", 64), ("vae_mlp", 64)},
            train=["--config.num_epochs=20", "--config.batch_size=64"], eval_samples=10_000)
TINY = dict(models=("vae_mlp", "dcgan"), batches=(8,), steps=2, warmup=1, peak_size=256,
            compiled={("vae_mlp", 8)},
            train=["--config.num_train_steps=20", "--config.batch_size=16",
                   "--config.eval_every_steps=20", "--config.eval_num_samples=200"],
            eval_samples=200)
DTYPES = ("float32", "bfloat16")
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def accelerator_tests(out: str) -> dict:
  """Counts of the `accelerator` tests (run in a subprocess on the default backend)."""
  report = os.path.join(out, "accelerator_tests.xml")
  env = {**ENV, "AIGC_JAX_TEST_ACCELERATOR": "1"}
  subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "accelerator", "-p",
                  "no:cacheprovider", f"--junitxml={report}",
                  os.path.join(ROOT, "tests", "test_accelerator.py")], cwd=ROOT, env=env,
                 check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  suite = next(ET.parse(report).getroot().iter("testsuite"))
  counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
  counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
  return counts


def step_benchmarks(part: dict) -> list[dict]:
  """timing.benchmark of each model, batch and dtype; where torch is installed, PyTorch (a
  float32 reference) beside the float32 rows of the models that have one: eager, and compiled
  for `part["compiled"]`."""
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    with_torch = True
  except ImportError:
    with_torch = False
  rows = []
  for name in part["models"] or presets.model_names():
    for batch in part["batches"]:
      for dtype in DTYPES:
        config = presets.bench_config(name, batch, overrides=[f"--config.compute_dtype={dtype}"])
        torch = with_torch and dtype == "float32" and name in torch_reference.MODELS
        rows.append(timing.benchmark(
            name, config, torch=torch, torch_compile=torch and (name, batch) in part["compiled"],
            steps=part["steps"], warmup=part["warmup"], peak_size=part["peak_size"]))
        print(json.dumps(rows[-1]), flush=True)
  return rows


def dcgan_run(out: str, part: dict) -> dict:
  """Trains experiments/dcgan_fashion_mnist.py into OUTDIR/dcgan; its wall time and metrics."""
  workdir = os.path.join(out, "dcgan")
  start = time.perf_counter()
  subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "dcgan_fashion_mnist.py"),
                  "--workdir", workdir, "--config.progress_bar=False", *part["train"]],
                 cwd=ROOT, env=ENV, check=True)
  wall_s = time.perf_counter() - start
  done = subprocess.run([sys.executable, "-m", "aigc_jax.evaluate", "--workdir", workdir,
                         "--checkpoint", "latest", "--num_samples", str(part["eval_samples"])],
                        cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
  metrics = json.loads(done.stdout.strip().splitlines()[-1])
  keep = ("step", "fid", "fid_floor", "precision", "recall", "num_samples")
  return {"train_wall_s": round(wall_s, 1), **{k: metrics[k] for k in keep if k in metrics}}


def markdown(result: dict) -> str:
  lines = [f"# Accelerator check: {result['devices']}", "",
           f"accelerator tests: {result['accelerator_tests']}", "",
           "| model | batch | dtype | step ms | images/s | % of peak | torch ms | speedup | "
           "torch.compile ms | speedup |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["benchmarks"]:
    lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['step_ms']} | "
                 f"{r['images_per_s']} | {100 * r['fraction_of_peak']:.1f} | "
                 f"{r.get('torch_step_ms', '-')} | {r.get('speedup_vs_torch', '-')} | "
                 f"{r.get('torch_compile_step_ms', '-')} | "
                 f"{r.get('speedup_vs_torch_compile', '-')} |")
  d = result["dcgan"]
  lines += ["", f"DCGAN ({' '.join(result['dcgan_args'])}): {d['train_wall_s']} s of training; "
            f"step {d.get('step')}, FID {d.get('fid')} (floor {d.get('fid_floor')}), precision "
            f"{d.get('precision')}, recall {d.get('recall')} of {d.get('num_samples')} samples"]
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", metavar="OUTDIR")
  parser.add_argument("--tiny", action="store_true", help="shrink every part (a CPU smoke run)")
  args = parser.parse_args(argv)
  part = TINY if args.tiny else FULL
  os.makedirs(args.out, exist_ok=True)
  start = time.perf_counter()
  result = {"devices": backend.describe_devices(), "tiny": args.tiny,
            "accelerator_tests": accelerator_tests(args.out),
            "benchmarks": step_benchmarks(part),
            "dcgan": dcgan_run(args.out, part), "dcgan_args": part["train"]}
  result["total_s"] = round(time.perf_counter() - start, 1)
  with open(os.path.join(args.out, "accelerator_check.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(args.out, "accelerator_check.md"), "w") as f:
    f.write(markdown(result))
  print(markdown(result))


if __name__ == "__main__":
  main()
