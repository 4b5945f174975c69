"""The training loop: `train_and_evaluate(config, workdir)` and the experiments' `main`.

The host decides chunk boundaries (log, eval, checkpoint, epoch end); each chunk of steps runs
on the device in one call. A run resumes from the latest checkpoint in its workdir and continues
exactly: per-step noise is fold_in(rng, step) and the data order depends only on (seed, epoch).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax import state as state_lib
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers


log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss became NaN)."""


def _every(value: int, default: int) -> int:
  return int(value) if value > 0 else default


def _early_stop_state(history: list[dict], metric: str, mode: str):
  """(best value, evaluations since the best) from the eval records of metrics.jsonl."""
  best, since = None, 0
  for record in history:
    if record.get("split") != "test" or metric not in record:
      continue
    value = record[metric]
    if best is None or (value < best if mode == "min" else value > best):
      best, since = value, 0
    else:
      since += 1
  return best, since


def initialize_distributed(config) -> None:
  """`jax.distributed.initialize` when the config or the environment asks for several processes.

  A coordinator address (config or JAX_COORDINATOR_ADDRESS) is passed on; without one, a job of
  several processes (`backend.cluster_environment`) lets jax read the cluster. num_processes and
  process_id, when set, win over the cluster's. Call before JAX runs anything. Every process
  runs the same command; process 0 writes the logs, samples and metrics.jsonl, all of them take
  part in checkpointing. Raises ConfigError when jax cannot tell the job's processes.
  """
  address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  cluster = None if address else backend.cluster_environment()
  if not (address or cluster) or jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(address or None, num_processes=config.num_processes or None,
                               process_id=None if config.process_id < 0 else config.process_id)
  except ValueError as e:  # jax found no coordinator or process count
    raise config_lib.ConfigError(
        f"cannot start the processes of this {cluster or 'multi-host'} job ({e}); set "
        "coordinator_address (process 0's host:port), num_processes and process_id") from None
  log.info("process %d of %d (coordinator %s): %d local / %d global devices",
           jax.process_index(), jax.process_count(), address or f"from {cluster}",
           jax.local_device_count(), jax.device_count())


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the last evaluation's metrics."""
  config = config_lib.validate(config)
  initialize_distributed(config)
  with backend.matmul_precision(config):  # every function of the run traces inside it
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict:
  is_writer = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  info = data_lib.DATASETS[config.dataset]
  sources = dict(idx_dir=config.idx_dir or None, tfds_data_dir=config.tfds_data_dir or None)
  family = families.get(config.model)
  train_images, train_labels = data_lib.load_split(config.dataset, "train", **sources)
  train_data = data_lib.to_device(train_images,
                                  family.train_labels(config, train_images, train_labels, workdir))
  test_data = data_lib.to_device(*data_lib.load_split(config.dataset, "test", **sources))
  num_train = int(train_data.labels.shape[0])
  batches_per_step = family.batches_per_step(config)
  steps_per_epoch = data_lib.steps_per_epoch(num_train, config.batch_size * batches_per_step)
  total = state_lib.total_train_steps(config, num_train, batches_per_step)
  trainable = family.build(config, info, total)
  try:
    run = parallel.make_train_loop(trainable.train_step, batch_size=config.batch_size,
                                   scale=config.scale, binarize=config.binarize,
                                   steps_per_call=config.steps_per_call, mode=config.parallel,
                                   batches_per_step=batches_per_step)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  eval_every = _every(config.eval_every_steps, steps_per_epoch)
  checkpoint_every = _every(config.checkpoint_every_steps, eval_every)
  log_every = config.log_every_steps
  log.info("%s", backend.describe_devices())
  log.info("%s on %s: %d train / %d test images, %d steps (%d per epoch), parallel=%s on %d "
           "device(s)", config.model, config.dataset, num_train, int(test_data.labels.shape[0]),
           total, steps_per_epoch, config.parallel, run.num_devices)

  rng = jax.random.PRNGKey(config.seed)
  ckpts = workdir_lib.open_checkpoints(workdir, config, trainable)
  latest = ckpts.latest_step()
  if latest is not None:
    state = ckpts.restore(jax.eval_shape(trainable.init, rng), latest)
    log.info("resuming from the checkpoint at step %d in %s", latest, workdir)
  else:
    state = jax.jit(trainable.init)(rng)
  if is_writer:
    workdir_lib.save_config(workdir, config)
  step = int(state.step)

  writer = writers.MetricWriter(workdir, enabled=is_writer)
  metric = f"test_{trainable.best_metric}"
  best, since_best = _early_stop_state(writer.truncate_after(step), trainable.best_metric,
                                       trainable.best_mode)
  patience = config.early_stopping_patience
  placed = run.put_state(state)  # `state` stays the single copy for evaluation and checkpoints
  placed_train = run.put_data(train_data)
  permutation = jax.jit(data_lib.epoch_permutation, static_argnums=(0, 2))
  perm_epoch, perm = None, None
  sums, sum_steps, window_start = None, 0, time.perf_counter()
  eval_metrics: dict = {}
  bar = tqdm(total=total, initial=step, desc=config.model, unit="step", dynamic_ncols=True,
             disable=not (config.progress_bar and is_writer))

  def evaluate_and_record(step: int) -> dict:
    metrics = trainable.evaluate(state, test_data)
    writer.write(step, "test", metrics)
    if is_writer:
      for name, (images, ncols) in trainable.log_images(state, test_data).items():
        path = writers.save_png(os.path.join(workdir, "samples", f"{name}_{step:07d}.png"), images, ncols)
        writers.save_png(os.path.join(workdir, "samples", f"{name}_latest.png"), images, ncols)
        log.info("wrote %s", path)
    bar.write(f"step {step}: " + ", ".join(f"test_{k}={v:.3f}" for k, v in metrics.items()))
    return metrics

  stopped_early = patience and best is not None and since_best >= patience
  while step < total and not stopped_early:
    epoch, index = divmod(step, steps_per_epoch)
    if epoch != perm_epoch:
      perm_epoch, perm = epoch, run.put_data(permutation(config.seed, epoch, num_train))
    boundary = min(total, (epoch + 1) * steps_per_epoch,
                   *((step // n + 1) * n for n in (log_every, eval_every, checkpoint_every)))
    num_steps = boundary - step
    placed, chunk_sums = run(placed, placed_train, perm, index, num_steps)
    state = run.get_state(placed)
    sums = chunk_sums if sums is None else jax.tree_util.tree_map(lambda a, b: a + b, sums, chunk_sums)
    sum_steps += num_steps
    step = boundary
    bar.update(num_steps)

    if step % log_every == 0 or step == total:
      means = {k: float(v) / sum_steps for k, v in jax.device_get(sums).items()}
      if not all(np.isfinite(v) for v in means.values()):
        raise TrainingError(f"training diverged before step {step} (train metrics {means}); lower "
                            "learning_rate or resume from an earlier checkpoint in a new workdir")
      means["steps_per_second"] = sum_steps / (time.perf_counter() - window_start)
      writer.write(step, "train", means)
      bar.set_postfix(loss=f"{means['loss']:.2f}")
      sums, sum_steps, window_start = None, 0, time.perf_counter()

    evaluated = step % eval_every == 0 or step == total
    if evaluated:
      eval_metrics = evaluate_and_record(step)
      value = eval_metrics[trainable.best_metric]
      if best is None or (value < best if trainable.best_mode == "min" else value > best):
        best, since_best = value, 0
      else:
        since_best += 1
      stopped_early = bool(patience) and since_best >= patience
      if stopped_early:
        bar.write(f"early stopping at step {step}: {metric} has not improved for {patience} "
                  f"evaluations (best {best:.4f})")
    if step % checkpoint_every == 0 or step == total or stopped_early:
      # Host (numpy) copies: with several processes every one holds the same replicated state,
      # and orbax writes numpy arrays from process 0 only.
      ckpts.save(step, jax.device_get(state),
                 {f"test_{k}": v for k, v in eval_metrics.items()} if evaluated else None)
      window_start = time.perf_counter()  # do not count the checkpoint in steps_per_second

  bar.close()
  if not eval_metrics:  # resumed a finished run: report its numbers without training
    eval_metrics = trainable.evaluate(state, test_data)
  ckpts.close()
  writer.close()
  return eval_metrics


def quiet_dependencies() -> None:
  """Called by entry points only: our INFO lines stay, orbax's and absl's INFO chatter goes."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("aigc_jax").setLevel(logging.INFO)


def _check_cli(argv: list[str], config) -> None:
  """Help and misspelt --config.KEY overrides, handled before absl parses anything."""
  if any(a in ("-h", "--help", "-help", "--helpshort") for a in argv[1:]):
    doc = (sys.modules["__main__"].__doc__ or "").strip()
    print(doc or f"python {argv[0]} --workdir DIR [--config.KEY=VALUE ...]")
    print("\nflags:\n  --workdir DIR          checkpoints, metrics.jsonl, tensorboard/, samples/*.png;"
          " an existing run there is resumed\n  --config.KEY=VALUE     override a config key:")
    for key, value in sorted(config.items()):
      print(f"      {key} = {value!r}")
    sys.exit(0)
  for arg in argv[1:]:
    if arg.startswith("--config.") and not arg.startswith("--config.__"):
      key = arg[len("--config."):].split("=", 1)[0].split(".", 1)[0]
      if key not in config:
        print(f"error: {config_lib.unknown_key_message(key, config.keys())} "
              f"(in {arg})", file=sys.stderr)
        sys.exit(2)


def main(get_config) -> None:
  """Entry point of an experiment file: `python experiments/NAME.py --workdir DIR [--config.K=V]`."""
  from absl import app, flags
  from ml_collections import config_flags

  config = get_config()
  _check_cli(sys.argv, config)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard "
                      "events and samples/*.png; an existing one is resumed.")
  config_flags.DEFINE_config_dict("config", config, "The experiment's config; override "
                                  "any key with --config.KEY=VALUE.")

  def run(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}; use --workdir DIR and --config.KEY=VALUE",
            file=sys.stderr)
      sys.exit(2)
    if not flags.FLAGS.workdir:
      print("error: --workdir is required (where checkpoints, metrics and samples go)",
            file=sys.stderr)
      sys.exit(2)
    quiet_dependencies()
    try:
      metrics = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    except (config_lib.ConfigError, data_lib.DataError, TrainingError,
            workdir_lib.CheckpointError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(" ".join(f"test_{k}={v:.4f}" for k, v in metrics.items()))

  app.run(run)
