"""Training a sweep: the population of `population` through the training loop's pieces.
`run_sweep(spec, workdir)` trains (or resumes) the sweep that `spec` (sweep.json's content:
the shared config, each varied key's values per member, halve_every, the members' stops)
describes; see `aigc_jax.sweep` for the files it writes."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import checkpoint_verify
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import lock
from aigc_jax import population as pop_lib
from aigc_jax import progress
from aigc_jax import run_setup
from aigc_jax import safe_files
from aigc_jax import schedule as schedule_lib
from aigc_jax import signals as signals_lib
from aigc_jax import sweep_spec
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers

log = logging.getLogger(__name__)


class Sweep(NamedTuple):
  """A sweep once set up: the runs' shared parts, one config and trainable per member."""

  workdir: str
  spec: dict  # sweep.json: config (the shared one), values ({key: per member}), halve_every
  configs: list
  trainables: list
  run: run_setup.Run  # member 0's Run, whose loop is the vmapped population step
  member_writers: list


def setup(spec: dict, workdir: str, member_map: str = "auto", member_devices: int = 0) -> Sweep:
  """Member configs, the data, member 0's Run with the population loop, the writers. Raises
  ConfigError for a varied key the step cannot take as a value. `member_map`: how the step runs
  over the members ('vmap', 'unroll', or 'auto': unrolled on CPU for a model whose steps run one
  per dispatch there, i.e. a convolutional one; vmapped otherwise). Vmapped members with
  parallel='none' are sharded over up to `member_devices` devices (0: all of this process's)."""
  shared = dict(spec["config"])
  base = config_lib.get_config(shared.pop("model"), **shared)
  configs = pop_lib.member_configs(base, spec["values"])
  family, info = families.get(base.model), data_lib.config_info(base)
  step = functools.partial(pop_lib.member_step, family=family, config=configs[0], info=info)
  conv = backend.steps_per_call(base.steps_per_call) == 1  # models whose loops are slow on CPU
  member_map = backend.choose(member_map, "unroll" if conv else "vmap", "vmap")
  run = run_setup.setup(configs[0], workdir, step, member_map, member_devices)
  trainables = [run.trainable] + [family.build(c, info, run.schedule.total) for c in configs[1:]]
  rows = base.batch_size * family.batches_per_step(base)
  batch = {
      "image": jax.ShapeDtypeStruct((rows,) + tuple(info.image_shape), jnp.float32),
      "label": jax.ShapeDtypeStruct((rows,), jnp.int32)
  }
  template = jax.eval_shape(run.trainable.init, jax.random.PRNGKey(0))
  pop_lib.check_traceable(functools.partial(step, total_steps=run.schedule.total), template, batch,
                          spec["values"])
  member_writers = [
      writers.MetricWriter(sweep_spec.member_dir(workdir, m),
                           jax.process_index() == 0) for m in range(len(configs))
  ]
  return Sweep(workdir, spec, configs, trainables, run, member_writers)


def init_population(sweep: Sweep, members: list[int]) -> pop_lib.Member:
  """The stacked fresh states of `members`, each from its own config's seed, by one vmapped
  init: an init's values depend on the seed only, its shapes on the config."""
  rngs = [jax.random.PRNGKey(sweep.configs[m].seed) for m in members]
  pop_lib.check_shapes(
      [jax.eval_shape(sweep.trainables[m].init, rng) for m, rng in zip(members, rngs)])
  state = jax.jit(jax.vmap(sweep.trainables[members[0]].init))(jnp.stack(rngs))
  values = pop_lib.stepped_values(sweep.spec["values"])
  return pop_lib.Member(state=state, values=pop_lib.take(values, members))


def restore_or_init(sweep: Sweep) -> tuple[pop_lib.Member, list[int]]:
  """(the stacked state, its members) of the newest checkpoint that verifies, or fresh ones."""
  ckpts = sweep.run.checkpoints
  if ckpts.latest_step() is None:
    members = list(range(len(sweep.configs)))
    return init_population(sweep, members), members
  one = jax.eval_shape(lambda: init_population(sweep, [0]))

  def template(step: int):  # the members alive at `step`, stacked
    return jax.tree_util.tree_map(
        lambda t: jax.ShapeDtypeStruct(
            (len(sweep_spec.alive_at(sweep.spec, step)),) + t.shape[1:], t.dtype), one)

  population, step = ckpts.restore_verified(template)
  ckpts.delete_after(step)
  sweep.spec["stops"] = [s for s in sweep.spec["stops"] if s["step"] <= step]
  log.info("resuming the sweep from step %d in %s", step, sweep.workdir)
  return population, sweep_spec.alive_at(sweep.spec, step)


def record_train(sweep: Sweep, members: list[int], step: int,
                 meter: schedule_lib.TrainMeter) -> dict:
  """Writes each member's mean train metrics since the last log; {member: 'diverged'} for those
  whose metrics are not finite."""
  sums = jax.device_get(meter.sums)
  seconds = time.perf_counter() - meter.start
  stops = {}
  for i, m in enumerate(members):
    means = {k: float(v[i]) / meter.steps for k, v in sums.items()}
    if not all(np.isfinite(v) for v in means.values()):
      stops[m] = "diverged"
    means["steps_per_second"] = meter.steps / seconds
    sweep.member_writers[m].write(step, "train", means)
    sweep.run.writer.write_event(step, "train", {"member": m, **means})
  meter.reset()
  return stops


def evaluate_members(sweep: Sweep, population, members: list[int], step: int, bar) -> dict:
  """{member: its periodic evaluation}, written to its metrics and the sweep's."""
  results = {}
  for i, m in enumerate(members):
    metrics = sweep.trainables[m].evaluate(pop_lib.row(population.state, i), sweep.run.test_data)
    sweep.member_writers[m].write(step, "test", metrics)
    sweep.run.writer.write_event(step, "test", {"member": m, **metrics})
    results[m] = metrics
  best = sweep.trainables[0].best_metric
  bar.write(f"step {step}: test_{best} " +
            " ".join(f"[{m}] {results[m][best]:.4g}" for m in members))
  return results


def halving(sweep: Sweep, members: list[int], results: dict, step: int) -> dict:
  """{member: 'halved'} for the worse half at every `halve_every`-th evaluation (not the last)."""
  every, sched = sweep.spec.get("halve_every", 0), sweep.run.schedule
  if not every or len(members) < 2 or step >= sched.total or (step // sched.eval_every) % every:
    return {}
  trainable = sweep.trainables[0]
  scores = [results[m][trainable.best_metric] for m in members]
  keep = {members[i] for i in pop_lib.survivors(scores, trainable.best_mode)}
  return {m: "halved" for m in members if m not in keep}


def write_member_run(sweep: Sweep, member: int, state, step: int, metrics: dict | None) -> None:
  """members/NN as an ordinary run directory: config.json, its state as a checkpoint (when
  finite) and samples/ (`python -m aigc_jax.plot --workdir` draws its curves)."""
  directory = sweep_spec.member_dir(sweep.workdir, member)
  workdir_lib.save_config(directory, sweep.configs[member])
  trainable = sweep.trainables[member]
  host = jax.device_get(state)
  if checkpoint_verify.all_finite(host):
    with workdir_lib.open_checkpoints(directory, sweep.configs[member], trainable) as ckpts:
      ckpts.save(step, host,
                 None if metrics is None else {f"test_{k}": v for k, v in metrics.items()})
    for name, (images, ncols) in trainable.log_images(state, sweep.run.test_data).items():
      writers.save_png(os.path.join(directory, "samples", f"{name}_latest.png"), images, ncols)


def stop_members(sweep: Sweep, population, members: list[int], stops: dict, step: int,
                 results: dict):
  """Saves the stopped members' runs, records their stops; (the rest's population, members)."""
  for reason in sorted(set(stops.values())):
    stopped = [m for m in members if stops.get(m) == reason]
    sweep.spec["stops"].append({"step": step, "members": stopped, "reason": reason})
    log.info("step %d: members %s stop (%s)", step, stopped, reason)
  if jax.process_index() == 0:
    sweep_spec.write_spec(sweep.workdir, sweep.spec)
    for i, m in enumerate(members):
      if m in stops:
        write_member_run(sweep, m, pop_lib.row(population.state, i), step, results.get(m))
  rows = [i for i, m in enumerate(members) if m not in stops]
  return pop_lib.take(population, rows), [members[i] for i in rows]


class LoopState:
  """The sweep loop's moving parts: the placed population, its members, data and data order."""

  def __init__(self, sweep: Sweep, population, members: list[int]):
    self.sweep, self.meter = sweep, schedule_lib.TrainMeter()
    self.keep(population, members)

  def advance(self, step: int, boundary: int) -> None:
    sched, loop = self.sweep.run.schedule, self.sweep.run.loop
    epoch, index = divmod(step, sched.steps_per_epoch)
    if epoch != self.perm_epoch:
      self.perm_epoch = epoch
      seeds = np.asarray([int(self.sweep.configs[m].seed) for m in self.members], np.int32)
      perm = pop_lib.permutations(seeds, np.int32(epoch), self.sweep.run.num_train)
      self.perm = loop.place.put_state(perm)  # each member's data order, from its own seed
    self.placed, sums = loop(self.placed, self.data, self.perm, index, boundary - step)
    self.meter.add(sums, boundary - step)

  def keep(self, population, members: list[int]) -> None:
    """Trains `population`, the stacked states of `members` (placed anew: their devices follow
    their number)."""
    if self.meter.sums is not None:
      self.meter.sums = pop_lib.take(self.meter.sums, [self.members.index(m) for m in members])
    loop = self.sweep.run.loop
    self.members, self.perm_epoch, self.perm = members, None, None
    self.placed = loop.place.put_state(population)
    self.data = loop.place.put_data(self.sweep.run.train_data, len(members))
    log.info("%d members on %d device(s)", len(members),
             len(jax.tree_util.tree_leaves(self.placed)[0].sharding.device_set))


def at_boundary(sweep: Sweep, ls: LoopState, boundary: schedule_lib.Boundary, bar) -> dict:
  """Logs, evaluates and stops members as `boundary` says (the sweep checkpoints at every
  evaluation); returns the evaluation's {member: metrics} ({} when none ran) and whether the
  schedule checkpoints here."""
  step, loop = boundary.step, sweep.run.loop
  stops, results = {}, {}
  if boundary.log:
    stops.update(record_train(sweep, ls.members, step, ls.meter))
  evaluated = boundary.evaluate
  saving = evaluated or boundary.checkpoint
  population = loop.place.get_state(ls.placed) if saving or stops else None  # one device's copy
  if saving:
    finite = np.asarray(pop_lib.finite_rows(population.state))
    stops.update({m: "diverged" for i, m in enumerate(ls.members) if not finite[i]})
  if evaluated:
    results = evaluate_members(sweep, population, ls.members, step, bar)
    alive = [m for m in ls.members if m not in stops]
    stops.update(halving(sweep, alive, results, step))
  if stops:
    population, members = stop_members(sweep, population, ls.members, stops, step, results)
    if not members:
      raise train.TrainingError(f"every member of the sweep diverged by step {step}; lower the "
                                "learning rates")
    ls.keep(population, members)
  return {"results": results, "save": saving}


def sweep_loop(sweep: Sweep, population, members: list[int], bar):
  """Trains the population to the end; (its last state, members, last evaluation)."""
  sched, run = sweep.run.schedule, sweep.run
  step = int(np.asarray(population.state.step)[0])
  history = [writer.truncate_after(step) for writer in [run.writer] + sweep.member_writers][0]
  ls, results = LoopState(sweep, population, members), {}

  def boundary(b: schedule_lib.Boundary) -> tuple[bool, bool]:
    nonlocal results
    done = at_boundary(sweep, ls, b, bar)
    results = done["results"] or results
    if done["save"] or b.signum is not None:
      run.checkpoints.save(b.step, jax.device_get(run.loop.place.get_state(ls.placed)))
    return done["save"], True

  with signals_lib.StopSignals() as signals:
    if schedule_lib.final_pending(sched, step, history):  # a stop in the last chunk skipped it
      results = at_boundary(sweep, ls, schedule_lib.Boundary(step, False, True, False, None),
                            bar)["results"]
    schedule_lib.run_chunks(sched, step, ls.advance, boundary, signals=signals, meter=ls.meter,
                            checkpoints=run.checkpoints, bar=bar)
  return run.loop.place.get_state(ls.placed), ls.members, results


def run_sweep(spec: dict, workdir: str, member_map: str = "auto", member_devices: int = 0) -> str:
  """Trains (or resumes) the sweep `spec` in `workdir` (`setup` for `member_map` and
  `member_devices`); returns its summary table. Holds the locks of the sweep's directory and
  of its members' folders (marked: a plain training run refuses them) while it runs."""
  claim = lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with claim, contextlib.ExitStack() as members_held:
    spec = sweep_spec.resume_spec(workdir, spec)
    for m in range(sweep_spec.num_members(spec) if jax.process_index() == 0 else 0):
      members_held.enter_context(lock.hold(sweep_spec.member_dir(workdir, m), member_of=workdir))
    sweep = setup(spec, workdir, member_map, member_devices)
    bar = None
    try:
      population, members = restore_or_init(sweep)
      if jax.process_index() == 0:
        sweep_spec.write_spec(workdir, sweep.spec)
      bar = progress.bar(sweep.run.schedule.total, f"sweep of {len(members)}",
                         initial=int(population.state.step[0]),
                         shown=sweep.configs[0].progress_bar and jax.process_index() == 0)
      population, members, results = sweep_loop(sweep, population, members, bar)
      step = int(np.asarray(population.state.step)[0])
      for i, m in enumerate(members):
        write_member_run(sweep, m, pop_lib.row(population.state, i), step, results.get(m))
    finally:
      if bar is not None:
        bar.close()
      for writer in [sweep.run.writer] + sweep.member_writers:
        writer.close()  # first: a failed save's error must not leave curves half-drawn
      sweep.run.checkpoints.close()
    if jax.process_index() == 0:
      sweep_spec.write_plots(workdir, sweep.spec)
    table = sweep_spec.summary(workdir, sweep.spec, sweep.trainables[0].best_metric,
                               sweep.trainables[0].best_mode)
    safe_files.write_text(os.path.join(workdir, "summary.txt"), table + "\n")
    return table
