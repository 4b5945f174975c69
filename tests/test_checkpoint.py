"""Tests for aigc_jax.checkpoint (orbax-backed train-state checkpoints)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import types
from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from aigc_jax import checkpoint as checkpoint_lib
from aigc_jax import checkpoint_verify
from aigc_jax import orbax_logs
from aigc_jax.checkpoint import CheckpointError
from aigc_jax.checkpoint import Checkpoints


class TrainState(flax.struct.PyTreeNode):
  """A small train state with pytree fields and static ones, as the families' states have."""

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def _apply(params, x):
  h = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  return h @ params["dense2"]["kernel"] + params["dense2"]["bias"]


_TX = optax.adam(1e-2)


def make_state(seed: int = 0, hidden: int = 8) -> TrainState:
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = {
      "dense1": {"kernel": jax.random.normal(k1, (3, hidden)), "bias": jnp.zeros((hidden,))},
      "dense2": {"kernel": jax.random.normal(k2, (hidden, 2)), "bias": jnp.zeros((2,))},
  }
  return TrainState(
      step=jnp.asarray(0, jnp.int32),
      params=params,
      opt_state=_TX.init(params),
      model_state={},
      rng=k3,
      apply_fn=_apply,
      tx=_TX,
  )


def train_steps(state: TrainState, n: int) -> TrainState:
  """A few real adam steps so that params, mu, nu, count and rng all change."""
  x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
  for _ in range(n):
    grads = jax.grad(lambda p: jnp.sum(state.apply_fn(p, x)**2))(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        rng=jax.random.split(state.rng)[0],
    )
  return state


def test_roundtrip_concrete_template_bitwise(tmp_path):
  state = train_steps(make_state(seed=0), 3)
  with Checkpoints(tmp_path / "ckpt") as ckpts:
    ckpts.save(3, state)
  # A fresh manager (new process after a restart) and a template with different values.
  template = make_state(seed=1)
  with Checkpoints(tmp_path / "ckpt") as ckpts:
    assert ckpts.latest_step() == 3
    restored = ckpts.restore(template)
  assert type(restored) is TrainState
  assert restored.apply_fn is _apply and restored.tx is _TX  # static fields from template
  chex.assert_trees_all_equal(restored, state)  # same treedef, bitwise-equal leaves
  assert int(restored.step) == 3
  assert restored.rng.dtype == jnp.uint32 and restored.rng.shape == (2,)
  assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
  leaf = restored.params["dense1"]["kernel"]
  assert isinstance(leaf, jax.Array)
  assert leaf.sharding == template.params["dense1"]["kernel"].sharding


def test_restore_into_eval_shape_template(tmp_path):
  state = train_steps(make_state(), 2)
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(2, state)
    abstract = jax.eval_shape(make_state)
    assert isinstance(abstract.params["dense1"]["kernel"], jax.ShapeDtypeStruct)
    restored = ckpts.restore(abstract)
  assert type(restored) is TrainState
  chex.assert_trees_all_equal(restored, state)
  for leaf in jax.tree.leaves(restored):
    assert isinstance(leaf, jax.Array)
    assert leaf.sharding == jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def test_keep_last_and_best(tmp_path):
  state = make_state()
  losses = [5.0, 1.0, 4.0, 3.0, 2.0]
  with Checkpoints(tmp_path, keep_last=2, best_metric="loss", best_mode="min") as ckpts:
    for step, loss in enumerate(losses, start=1):
      ckpts.save(step, state.replace(step=jnp.int32(step)), {"loss": jnp.float32(loss)})
    # last 2 = {4, 5}; best = step 2 (loss 1); step 1 (loss 5) and 3 (loss 4) deleted.
    assert ckpts.all_steps() == [2, 4, 5]
    assert ckpts.best_step() == 2
    assert ckpts.latest_step() == 5
    assert int(ckpts.restore(state, step=2).step) == 2
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "4", "5"]
  # State survives a restart: metrics are read back from disk.
  with Checkpoints(tmp_path, keep_last=2, best_metric="loss") as ckpts:
    assert ckpts.all_steps() == [2, 4, 5] and ckpts.best_step() == 2
    ckpts.save(6, state, {"loss": 0.5})  # new best; 4 is now neither last-2 nor best
    assert ckpts.all_steps() == [5, 6] and ckpts.best_step() == 6


def test_keep_best_max_and_metricless_checkpoints(tmp_path, caplog):
  state = make_state()
  caplog.set_level(logging.WARNING)
  with Checkpoints(tmp_path, keep_last=1, best_metric="acc", best_mode="max") as ckpts:
    ckpts.save(1, state, {"acc": 0.9})
    ckpts.save(2, state, {"acc": 0.5})
    ckpts.save(3, state)  # no metric: only LatestN keeps it
    ckpts.save(4, state, {"acc": float("nan")})  # non-finite counts as no metric
    assert ckpts.all_steps() == [1, 4]
    assert ckpts.best_step() == 1
  # orbax's "did not provide metrics" warning is dropped, and only for the save call.
  assert not [r for r in caplog.records if "tracked_metric" in r.getMessage()]
  # Only the filter that keeps orbax's thread tracebacks in the debug log stays.
  assert logging.getLogger("absl").filters == [orbax_logs.orbax_report]
  with Checkpoints(tmp_path / "plain", keep_last=2) as ckpts:
    ckpts.save(1, state, {"loss": 1.0})
    assert ckpts.best_step() is None


def test_best_step_none_without_metrics(tmp_path):
  with Checkpoints(tmp_path, best_metric="loss") as ckpts:
    assert ckpts.best_step() is None
    ckpts.save(1, make_state())
    assert ckpts.best_step() is None and ckpts.latest_step() == 1


def test_mismatch_raises_clear_error(tmp_path):
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(1, make_state(hidden=8))
    with pytest.raises(CheckpointError) as err:
      ckpts.restore(make_state(hidden=16))
    msg = str(err.value)
    assert str(tmp_path) in msg and "does not match" in msg
    assert "dense1/bias" in msg and "(8,)" in msg and "(16,)" in msg
    # A structure change (extra collection) is reported too.
    bigger = make_state().replace(model_state={"batch_stats": jnp.zeros(3)})
    with pytest.raises(CheckpointError, match="does not match.*batch_stats"):
      ckpts.restore(bigger)
    with pytest.raises(CheckpointError, match="does not exist"):
      ckpts.restore(make_state(), step=7)
    ckpts.save(2, bigger)  # and a checkpoint with more than the model has
    with pytest.raises(CheckpointError, match="does not match.*batch_stats.*not in the model"):
      ckpts.restore(make_state(), step=2)


def test_empty_directory(tmp_path):
  with Checkpoints(tmp_path / "new") as ckpts:
    assert (tmp_path / "new").is_dir()
    assert ckpts.latest_step() is None and ckpts.all_steps() == []
    with pytest.raises(CheckpointError, match="no checkpoint"):
      ckpts.restore(make_state())


def test_same_step_twice_is_skipped_and_older_step_raises(tmp_path):
  first = train_steps(make_state(), 5)
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(5, first)
    ckpts.save(5, train_steps(first, 1))  # skipped, keeps the first one
    chex.assert_trees_all_equal(ckpts.restore(first), first)
    with pytest.raises(CheckpointError, match="older than the latest"):
      ckpts.save(4, first)
    assert ckpts.all_steps() == [5]


def test_unfinished_tmp_checkpoint_is_ignored(tmp_path):
  good = train_steps(make_state(), 1)
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(1, good)
  # What a process killed mid-save leaves behind: a tmp dir for a higher step with junk.
  tmp = tmp_path / "7.orbax-checkpoint-tmp"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "garbage").write_bytes(b"\x00partial")
  with Checkpoints(tmp_path) as ckpts:
    assert ckpts.latest_step() == 1 and ckpts.all_steps() == [1]
    chex.assert_trees_all_equal(ckpts.restore(make_state(seed=3)), good)
    # Saving that step later replaces the stale tmp dir and commits normally.
    ckpts.save(7, train_steps(good, 6))
    assert ckpts.latest_step() == 7
    assert int(ckpts.restore(good).step) == 7
  assert not tmp.exists()


def test_corrupt_checkpoint_raises_and_older_step_still_restores(tmp_path):
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(1, train_steps(make_state(), 1))
    ckpts.save(2, train_steps(make_state(), 2))
  for f in (tmp_path / "2" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"junk")
  with Checkpoints(tmp_path) as ckpts:
    with pytest.raises(CheckpointError, match=r"2 could not be read.*\[1, 2\]"):
      ckpts.restore(make_state())
    assert int(ckpts.restore(make_state(), step=1).step) == 1


def test_invalid_arguments(tmp_path):
  with pytest.raises(ValueError):
    Checkpoints(tmp_path, keep_last=0)
  with pytest.raises(ValueError):
    Checkpoints(tmp_path, best_metric="loss", best_mode="lowest")
  np.testing.assert_equal(len(list(tmp_path.iterdir())), 0)


def test_a_failed_write_is_one_clear_error_and_keeps_the_checkpoints(tmp_path, monkeypatch):
  state = make_state()
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(1, state)
    ckpts.wait()

    def disk_full(*args, **kwargs):
      raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpts._mngr, "save", disk_full)  # pylint: disable=protected-access
    with pytest.raises(CheckpointError,
                       match=r"No space left on device.*free disk space.*\(\[1\]\) are kept"):
      ckpts.save(2, state)
    assert ckpts.all_steps() == [1]


def save_trained(directory, steps: list[int]) -> dict[int, TrainState]:
  """Checkpoints, as each step s of `steps`, the state trained s steps; returns them by step."""
  states = {s: train_steps(make_state(), s) for s in steps}
  with Checkpoints(directory) as ckpts:
    for s, state in states.items():
      ckpts.save(s, state)
  return states


def assert_refused_and_older_restored(directory, step: int, reason: str, older, caplog):
  """Restoring `step` raises a CheckpointError naming it, `reason` and the fix; the newest that
  verifies is the older state."""
  caplog.set_level(logging.WARNING)
  with Checkpoints(directory) as ckpts:
    with pytest.raises(CheckpointError,
                       match=rf"checkpoint \S*{step} does not verify \({reason}.*delete it"):
      ckpts.restore(make_state(), step=step)
    state, restored = ckpts.restore_verified(make_state())
  assert restored == int(older.step) and f"skipping checkpoint {directory}/{step}" in caplog.text
  chex.assert_trees_all_equal(state, older)


@pytest.mark.parametrize("tamper", ["deleted", "empty", "one_left_out"])
def test_a_checkpoint_without_all_its_checksums_is_refused(tmp_path, caplog, tamper):
  states = save_trained(tmp_path, [2, 3])
  sums = tmp_path / "3" / "checksums"
  if tamper == "deleted":
    shutil.rmtree(sums)
  else:
    saved = json.loads((sums / "metadata").read_text())
    assert len(saved) == len(jax.tree.leaves(states[3]))
    kept = {} if tamper == "empty" else dict(list(saved.items())[1:])
    (sums / "metadata").write_text(json.dumps(kept))
  reason = ("it has no checksums"
            if tamper != "one_left_out" else "the arrays at .* differ from the checksum")
  assert_refused_and_older_restored(tmp_path, 3, reason, states[2], caplog)


@pytest.mark.parametrize("with_checksums", [True, False])
def test_a_state_moved_into_another_steps_directory_is_refused(tmp_path, caplog, with_checksums):
  states = save_trained(tmp_path, [1, 2, 3])
  # Step 2's arrays under step 3's name: with step 2's checksums they all match their checksums.
  moved = ["state", "checksums"] if with_checksums else ["state"]
  for item in moved:
    shutil.rmtree(tmp_path / "3" / item)
    shutil.copytree(tmp_path / "2" / item, tmp_path / "3" / item)
  reason = ("its state is of step 2, not 3"
            if with_checksums else "the arrays at .* differ from the checksum")
  assert_refused_and_older_restored(tmp_path, 3, reason, states[2], caplog)


def set_recorded_format(directory, step: int, version) -> None:
  """Writes `version` as the format recorded in `step`'s metadata (None: no record, as a
  checkpoint written before formats were recorded)."""
  path = directory / str(step) / "_CHECKPOINT_METADATA"
  metadata = json.loads(path.read_text())
  custom = metadata.get("custom_metadata") or {}
  assert custom.pop(checkpoint_lib._FORMAT_KEY) == checkpoint_verify.FORMAT  # pylint: disable=protected-access
  if version is not None:
    custom[checkpoint_lib._FORMAT_KEY] = version  # pylint: disable=protected-access
  metadata["custom_metadata"] = custom
  path.write_text(json.dumps(metadata))


def test_a_checkpoint_without_a_recorded_format_still_restores_exactly(tmp_path):
  states = save_trained(tmp_path, [2])
  set_recorded_format(tmp_path, 2, None)
  with Checkpoints(tmp_path) as ckpts:
    assert ckpts.format_of(2) == 1
    chex.assert_trees_all_equal(ckpts.restore(make_state(), 2), states[2])


@pytest.mark.parametrize("version, message", [
    (checkpoint_verify.FORMAT + 1,
     r"format 3, which this aigc_jax cannot read \(it writes format 2 "
     r"and reads formats 1, 2\): a newer aigc_jax wrote it; update aigc_jax"),
    ("x", r"format 'x', which this aigc_jax cannot read .*use the aigc_jax that wrote it"),
])
def test_a_checkpoint_of_an_unreadable_format_is_refused_naming_both(tmp_path, version, message):
  save_trained(tmp_path, [2])
  set_recorded_format(tmp_path, 2, version)
  with Checkpoints(tmp_path) as ckpts:
    with pytest.raises(CheckpointError, match=message):
      ckpts.restore(make_state(), 2)


def test_an_older_format_that_does_not_fit_the_model_says_so(tmp_path):
  """A state of another structure: the older format's own message, not only 'use the config'."""
  save_trained(tmp_path, [2])
  set_recorded_format(tmp_path, 2, None)
  with Checkpoints(tmp_path) as ckpts:
    with pytest.raises(
        CheckpointError, match=r"checkpoint format 1 \(written before checkpoints "
        r"recorded their format\), not this aigc_jax's format 2, and its state "
        r"does not fit .*an older aigc_jax wrote it"):
      ckpts.restore(make_state(hidden=4), 2)


def test_a_failed_background_write_keeps_orbax_tracebacks_in_the_debug_log(
    tmp_path, monkeypatch, caplog):
  """orbax's thread reports of the failure reach no handler but the debug log; the failure is one
  CheckpointError; the earlier step is kept and still restores."""
  state = train_steps(make_state(), 1)
  caplog.set_level(logging.DEBUG, logger="aigc_jax.checkpoint")
  with Checkpoints(tmp_path) as ckpts:
    ckpts.save(1, state)
    ckpts.wait()

    async def disk_full(*args, **kwargs):
      raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left on device.*\(\[1\]\) are kept"):
      ckpts.save(2, train_steps(state, 1))
      ckpts.wait()
    monkeypatch.undo()
    assert ckpts.all_steps() == [1]
    chex.assert_trees_all_equal(ckpts.restore(make_state()), state)
  assert not [r for r in caplog.records if r.name == "absl" and r.levelno >= logging.ERROR]
  assert [
      r for r in caplog.records
      if r.levelno == logging.DEBUG and r.exc_info and r.getMessage().startswith("orbax: ")
  ]


def test_a_read_completing_after_its_loop_closed_is_not_printed(tmp_path, monkeypatch):
  """tensorstore reports a read that completes after orbax closed its event loop (another read
  of the same restore failed) as unraisable: it goes to the debug log, anything else does not."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  Checkpoints(tmp_path).close()  # installs the hook over the one in place
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as e:
    closed = e
  other = ValueError("something else")
  for error in (closed, other):
    sys.unraisablehook(
        types.SimpleNamespace(exc_type=type(error), exc_value=error,
                              exc_traceback=error.__traceback__, err_msg=None, object=None))
  assert [u.exc_value for u in seen] == [other]


def test_a_reader_goes_on_to_the_steps_a_running_save_put_in_place_of_the_ones_it_listed(
    tmp_path, caplog):
  """A sample or evaluation opened while training saves: the steps it listed are deleted under
  it (keep_last) and newer ones written; it restores the newest, with warnings, not an error."""
  states = {s: train_steps(make_state(), s) for s in range(1, 5)}
  with Checkpoints(tmp_path, keep_last=2) as writer:
    writer.save(1, states[1])
    writer.save(2, states[2])
    writer.wait()
    with Checkpoints(tmp_path) as reader:
      assert reader.all_steps() == [1, 2]
      writer.save(3, states[3])
      writer.save(4, states[4])
      writer.wait()
      state, step = reader.restore_verified(make_state())
  assert step == 4 and "skipping checkpoint" in caplog.text
  chex.assert_trees_all_equal(state, states[4])
