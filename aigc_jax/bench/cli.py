"""Times an experiment's real train step on this machine, optionally against PyTorch eager.

  python -m aigc_jax.bench --model gan_mlp --batch 64 [256 ...] [--steps-per-call K] [--torch]
      [--torch-compile] [--json]
  python -m aigc_jax.bench --torch --table benchmarks/RESULTS.md    # what `make bench` runs
  python -m aigc_jax.bench --input_pipeline --model dcgan --dataset folder:PATH [--steps N]

A model is an experiment preset (`presets`) with the batch size and steps per call overridden.
The JAX side is the training loop's own path (`timing`). Reported: compile time (the first call
less a steady call), the median, min and max of the step time over the timed calls (call time /
steps per call), images/s, XLA's FLOP count of one step, the GFLOP/s that makes and its fraction
of this machine's matmul peak for what the step ran (`timing.peak_kind`: float32 at the config's
matmul_precision, or bfloat16; a large `jnp.dot` timed here), the backend and device kind, and
with --torch the same model and step in PyTorch eager (`torch_reference`, on CUDA when PyTorch
sees a GPU, else the CPU) timed in the same process and the same way (calls of steps-per-call
steps, one sync per call; TF32 off for matmul_precision 'highest', on otherwise), and the ratio;
with --torch-compile the same with its modules
`torch.compile`d. Several --batch values sweep. With --epoch, one whole epoch of the synthetic
set run the way train.py runs it, against steps x the median step time. With --profile N, the N
ops of the compiled step that take the most time (`step_profile`). With --input_pipeline, the
streamed input's images/s alone and feeding the train step (`input_pipeline`) instead. Every
error is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from aigc_jax import backend
from aigc_jax.bench import input_pipeline
from aigc_jax.bench import presets
from aigc_jax.bench import report
from aigc_jax.bench import timing
from aigc_jax.bench import torch_timing
from aigc_jax.bench.presets import BenchmarkError

PROG = "python -m aigc_jax.bench"
# What `make bench` measures: (model, batch), the experiments' batches plus MLP GAN at 256.
TABLE_RUNS = ("gan_mlp:64", "gan_mlp:256", "dcgan:64", "cgan:64", "wgan_gp:64", "sngan_hinge:64",
              "vae_mlp:128", "vae_conv:64", "cvae:128")


def positive_int(text: str) -> int:
  """`text` as an int > 0; argparse.ArgumentTypeError otherwise."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
  return value


def parse_run(text: str) -> tuple[str, int | None]:
  """NAME or NAME:BATCH -> (NAME, BATCH or None)."""
  name, _, batch = text.partition(":")
  return name, positive_int(batch) if batch else None


def build_parser() -> argparse.ArgumentParser:
  """The command's flags; unknown arguments are left for --config.KEY=VALUE overrides."""
  parser = argparse.ArgumentParser(
      prog=PROG, description="Time an experiment's train step (JAX, optionally vs PyTorch eager).",
      epilog="--config.KEY=VALUE (repeatable) changes a key of the experiment's config, as the "
      "experiment files take it, e.g. --config.upsample=transpose.")
  add = parser.add_argument
  add("--model", metavar="NAME",
      help=f"an experiment preset: {', '.join(presets.model_names())} (mlp_gan = gan_mlp)")
  add("--batch", type=positive_int, nargs="+", metavar="B",
      help="batch size, or several to sweep (default: the experiment's)")
  add("--parallel", default="none", choices=backend.PARALLEL_MODES, metavar="MODE",
      help=f"data-parallel mode: {', '.join(backend.PARALLEL_MODES)} (default none: one device)")
  add("--steps-per-call", type=positive_int, metavar="K",
      help="train steps per dispatch (default: the experiment's)")
  add("--torch", action="store_true", help="also time the PyTorch eager reference")
  add("--torch-compile", action="store_true",
      help="also time the PyTorch reference with its modules torch.compile'd")
  add("--json", action="store_true", help="print one JSON object")
  add("--epoch", action="store_true", help="also time one epoch as train.py runs it "
      "(keys epoch_s, epoch_steps, epoch_vs_steps)")
  add(
      "--profile", type=positive_int, metavar="N", help="also print the N ops of the compiled "
      "step that take the most time (jax.profiler; to stderr)")
  add(
      "--images", type=positive_int, metavar="N",
      help=f"size of the synthetic training set (default {timing.NUM_IMAGES:,}, as "
      "Fashion-MNIST's, or one call's images where a call needs more)")
  add("--steps", type=positive_int, default=50, metavar="N", help="timed steps (default 50)")
  add("--warmup", type=int, default=5, metavar="N",
      help="warm-up steps after the compiling first call (default 5)")
  add("--peak-size", type=positive_int, default=4096, metavar="N",
      help="side of the square matmul that measures the peak (default 4096)")
  add("--table", metavar="OUT.md", help="run --models and write a markdown table")
  add("--models", nargs="+", metavar="NAME[:BATCH]", type=parse_run,
      help="with --table (default: every experiment at its reference batch)")
  add(
      "--input_pipeline", action="store_true", help="time the streamed input pipeline instead: "
      "images/s of the loader alone and of loader plus train step")
  add("--dataset", metavar="NAME", help="the dataset (as --config.dataset=NAME), e.g. "
      "folder:PATH or tfds:NAME")
  return parser


def runs_of(args) -> list[tuple[str, int | None]]:
  """The (model, batch or None) runs the arguments ask for, in order: --model, else with --table
  --models or TABLE_RUNS; --batch sweeps every model over every batch."""
  runs = [(args.model, None)]
  if args.table is not None and not args.model:
    runs = args.models or [parse_run(run) for run in TABLE_RUNS]
  if args.batch:
    runs = [
        (name, batch) for name in dict.fromkeys(name for name, _ in runs) for batch in args.batch
    ]
  return runs


def configs_of(args, overrides: list[str]) -> list[tuple[str, object]]:
  """(model, bench_config) of every run, all checked (the PyTorch reference too, with --torch or
  --torch-compile) before anything is timed; BenchmarkError on the first that cannot run."""
  configs = []
  for name, batch in runs_of(args):
    config = presets.bench_config(name, batch, args.steps_per_call, args.parallel, overrides)
    if args.torch or args.torch_compile:
      torch_timing.check_reference(name, config)
    configs.append((name, config))
  return configs


def main(argv: list[str] | None = None) -> None:
  """The command: prints one result per run (JSON lines with --json), writes --table's file.
  Exits with status 2 and one error line for bad arguments or a run that cannot be made."""
  parser = build_parser()
  args, overrides = parser.parse_known_args(argv)
  overrides += [f"--config.dataset={args.dataset}"] if args.dataset else []
  if args.table is None and not args.model:
    parser.error("--model is required (or --table OUT.md)")
  if args.warmup < 0:
    parser.error(f"--warmup must be >= 0, got {args.warmup}")
  load_before = os.getloadavg()[0]
  results = []
  try:
    configs = configs_of(args, overrides)
    if report.is_busy(load_before):
      print(f"warning, {report.busy_warning(load_before)}", file=sys.stderr)
    for name, config in configs:
      if args.input_pipeline:
        result = input_pipeline.measure(config, args.steps, args.warmup)
        print(json.dumps(result) if args.json else input_pipeline.describe(result), flush=True)
        continue
      result = timing.benchmark(name, config, torch=args.torch, torch_compile=args.torch_compile,
                                steps=args.steps, warmup=args.warmup, peak_size=args.peak_size,
                                epoch=args.epoch, num_images=args.images, profile=args.profile or 0)
      results.append(result)
      print(
          json.dumps(result) if args.json else report.describe(result, config.steps_per_call),
          flush=True)
  except BenchmarkError as e:
    parser.error(str(e))
  if args.table is not None:
    command = f"{PROG} " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report.table(results, command, load_before, args.steps, args.warmup)
    Path(args.table).write_text(text)
    print(f"wrote {args.table}", file=sys.stderr)
