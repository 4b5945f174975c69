"""Times an experiment's real train step on this machine, optionally against PyTorch eager.

  python -m aigc_jax.bench --model gan_mlp --batch 64[,256,...] [--steps_per_call K] [--torch]
      [--torch_compile] [--json] [--config.KEY=VALUE ...]
  python -m aigc_jax.bench --torch --table benchmarks/RESULTS.md    # what `make bench` runs
  python -m aigc_jax.bench --input_pipeline --model dcgan --dataset folder:PATH [--steps N]

A model is an experiment preset (`presets`) with the batch size and steps per call overridden.
The JAX side is the training loop's own path (`timing`). Reported: compile time (the first call
less a steady call), the median, min and max of the step time over the timed calls (call time /
steps per call), images/s, XLA's FLOP count of one step, the GFLOP/s that makes and its fraction
of this machine's matmul peak for what the step ran (`timing.peak_kind`: float32 at the config's
matmul_precision, or bfloat16; a large `jnp.dot` timed here), the backend and device kind, and
with --torch the same model and step in PyTorch eager (`torch_reference`, on CUDA when PyTorch
sees a GPU, else the CPU) timed in the same process and the same way (calls of steps_per_call
steps, one sync per call; TF32 off for matmul_precision 'highest', on otherwise), and the ratio;
with --torch_compile the same with its modules `torch.compile`d. Several --batch values
(--batch 64,256) sweep. With --epoch, one whole epoch of the synthetic set run the way train.py
runs it, against steps x the median step time. With --profile N, the N ops of the compiled step
that take the most time (`step_profile`). With --input_pipeline, the streamed input's images/s
alone and feeding the train step (`input_pipeline`) instead. --config.KEY=VALUE (repeatable)
changes a key of the experiment's config, as the experiment files take it, e.g.
--config.upsample=transpose. Every error is one `error:` line and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import flags

from aigc_jax import backend
from aigc_jax import command_line
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
FLAGS = command_line.new_flags()
flags.DEFINE_string(
    "model", None, f"An experiment preset: {', '.join(presets.model_names())} (mlp_gan = "
    "gan_mlp).", flag_values=FLAGS)
flags.DEFINE_list("batch", [], "Batch size, or several to sweep, e.g. 64,256 (default: the "
                  "experiment's).", flag_values=FLAGS)
flags.DEFINE_enum("parallel", "none", list(backend.PARALLEL_MODES),
                  "Data-parallel mode (none: one device).", flag_values=FLAGS)
flags.DEFINE_integer("steps_per_call", None, "Train steps per dispatch (default: the "
                     "experiment's).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_boolean("torch", False, "Also time the PyTorch eager reference.", flag_values=FLAGS)
flags.DEFINE_boolean("torch_compile", False, "Also time the PyTorch reference with its modules "
                     "torch.compile'd.", flag_values=FLAGS)
flags.DEFINE_boolean("json", False, "Print one JSON object per run.", flag_values=FLAGS)
flags.DEFINE_boolean(
    "epoch", False, "Also time one epoch as train.py runs it (keys epoch_s, "
    "epoch_steps, epoch_vs_steps).", flag_values=FLAGS)
flags.DEFINE_integer(
    "profile", None, "Also print the N ops of the compiled step that take the "
    "most time (jax.profiler; to stderr).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
    "images", None, f"Size of the synthetic training set (default {timing.NUM_IMAGES:,}, as "
    "Fashion-MNIST's, or one call's images where a call needs more).", lower_bound=1,
    flag_values=FLAGS)
flags.DEFINE_integer("steps", 50, "Timed steps.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("warmup", 5, "Warm-up steps after the compiling first call.", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_integer("peak_size", 4096, "Side of the square matmul that measures the peak.",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string("table", None, "OUT.md: run --models and write a markdown table.",
                    flag_values=FLAGS)
flags.DEFINE_list(
    "models", [], "NAME[:BATCH],...: the runs of --table (default: every experiment at its "
    "reference batch).", flag_values=FLAGS)
flags.DEFINE_boolean(
    "input_pipeline", False, "Time the streamed input pipeline instead: images/s of the loader "
    "alone and of loader plus train step.", flag_values=FLAGS)
flags.DEFINE_string("dataset", None, "The dataset (as --config.dataset=NAME), e.g. folder:PATH "
                    "or tfds:NAME.", flag_values=FLAGS)


def positive_int(text: str, flag: str = "--batch") -> int:
  """`text` (a value of `flag`) as an int > 0; BenchmarkError otherwise."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise BenchmarkError(f"{flag}: expected a positive integer, got '{text}'")
  return value


def parse_run(text: str) -> tuple[str, int | None]:
  """NAME or NAME:BATCH -> (NAME, BATCH or None)."""
  name, _, batch = text.partition(":")
  return name, positive_int(batch, "--models") if batch else None


def runs_of() -> list[tuple[str, int | None]]:
  """The (model, batch or None) runs the flags ask for, in order: --model, else with --table
  --models or TABLE_RUNS; --batch sweeps every model over every batch."""
  runs = [(FLAGS.model, None)]
  if FLAGS.table is not None and not FLAGS.model:
    runs = [parse_run(run) for run in FLAGS.models or TABLE_RUNS]
  if FLAGS.batch:
    batches = [positive_int(batch) for batch in FLAGS.batch]
    runs = [(name, batch) for name in dict.fromkeys(name for name, _ in runs) for batch in batches]
  return runs


def configs_of(overrides: list[str]) -> list[tuple[str, object]]:
  """(model, bench_config) of every run, all checked (the PyTorch reference too, with --torch or
  --torch_compile) before anything is timed; BenchmarkError on the first that cannot run."""
  configs = []
  for name, batch in runs_of():
    config = presets.bench_config(name, batch, FLAGS.steps_per_call, FLAGS.parallel, overrides)
    if FLAGS.torch or FLAGS.torch_compile:
      torch_timing.check_reference(name, config)
    configs.append((name, config))
  return configs


def time_runs(configs: list[tuple[str, object]]) -> list[dict]:
  """Times every run, printing each result as it comes (a JSON line with --json)."""
  results = []
  for name, config in configs:
    if FLAGS.input_pipeline:
      result = input_pipeline.measure(config, FLAGS.steps, FLAGS.warmup)
      print(json.dumps(result) if FLAGS.json else input_pipeline.describe(result), flush=True)
      continue
    result = timing.benchmark(name, config, torch=FLAGS.torch, torch_compile=FLAGS.torch_compile,
                              steps=FLAGS.steps, warmup=FLAGS.warmup, peak_size=FLAGS.peak_size,
                              epoch=FLAGS.epoch, num_images=FLAGS.images, profile=FLAGS.profile or
                              0)
    results.append(result)
    print(
        json.dumps(result) if FLAGS.json else report.describe(result, config.steps_per_call),
        flush=True)
  return results


def main(argv: list[str] | None = None) -> None:
  """The command, on its arguments `argv` (default sys.argv[1:]): prints one result per run,
  writes --table's file. Exits with status 2 and one error line for bad arguments or a run that
  cannot be made."""
  _, overrides = command_line.parse(FLAGS, argv, __doc__, PROG, overrides=True)
  command_line.use_one_log_format("__main__" if argv is None else __name__)
  overrides += [f"--config.dataset={FLAGS.dataset}"] if FLAGS.dataset else []
  if FLAGS.table is None and not FLAGS.model:
    command_line.usage_error("--model is required (or --table OUT.md)", PROG)
  load_before = os.getloadavg()[0]
  try:
    configs = configs_of(overrides)
    if report.is_busy(load_before):
      print(f"warning, {report.busy_warning(load_before)}", file=sys.stderr)
    results = time_runs(configs)
  except BenchmarkError as e:
    command_line.usage_error(str(e))
  if FLAGS.table is not None:
    command = f"{PROG} " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report.table(results, command, load_before, FLAGS.steps, FLAGS.warmup)
    Path(FLAGS.table).write_text(text)
    print(f"wrote {FLAGS.table}", file=sys.stderr)
