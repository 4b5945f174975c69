"""Train-state checkpoints on orbax: keep the last N and the best K steps, atomically.

Layout: ``<directory>/<step>/state`` (orbax ``StandardSave`` of the state's pytree nodes),
``<step>/checksums`` (JSON: the sha256 of every array; a step without them is never restored),
``<step>/metrics`` (JSON, only with ``best_metric``) and ``FORMAT`` in orbax's step metadata
(none: format 1, which differs in that only). Orbax writes each step into
``<step>.orbax-checkpoint-tmp`` and renames it when complete (on GCS it writes
``commit_success.txt`` last instead); unfinished steps are never listed, restored or kept.
Saves are asynchronous: ``save`` returns once the arrays are copied to host memory (donating or
mutating the state afterwards is safe); files are written in the background and old steps are
deleted only after the new one is committed. ``wait``, ``restore`` and ``close`` block until
pending writes are done and re-raise a failed write's error (as one CheckpointError; orbax's
thread tracebacks go to the debug log).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from typing import Any, Mapping, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from aigc_jax import checkpoint_verify as verify
from aigc_jax import entry
from aigc_jax import orbax_logs
from aigc_jax import safe_files

__all__ = ["CheckpointError", "Checkpoints", "abstract_like", "remove_unfinished"]

_log = logging.getLogger(__name__)
_ITEM = "state"
_SUMS = "checksums"
_FORMAT_KEY = "aigc_jax_checkpoint_format"
S = TypeVar("S")


class CheckpointError(RuntimeError):
  """A checkpoint is missing, unreadable or does not fit the state it is restored into."""


def abstract_like(state: Any) -> Any:
  """`state` with `jax.ShapeDtypeStruct` leaves; unsharded leaves, and leaves placed on another
  process's devices (`jax.eval_shape` may name global device 0), go to the first local device."""
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x: Any) -> jax.ShapeDtypeStruct:
    x = x if hasattr(x, "dtype") else np.asarray(x)
    sharding = getattr(x, "sharding", None)
    if sharding is None or not sharding.is_fully_addressable:
      sharding = default
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(leaf, state)


class Checkpoints:
  """Saves and restores train states in `directory`, keeping the last and the best steps. An
  existing step is never saved over (a warning); an older one raises `CheckpointError`. From the
  first save until `close`, a stop signal that ends the process removes an unfinished save."""

  def __init__(self, directory: str | os.PathLike[str], *, keep_last: int = 3,
               best_metric: str | None = None, best_mode: str = "min", keep_best: int = 1) -> None:
    if keep_last < 1 or (best_metric is not None and keep_best < 1):
      raise ValueError(f"keep_last and keep_best must be >= 1, got {keep_last}, {keep_best}")
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    self.best_metric = best_metric
    worst = math.inf if best_mode == "min" else -math.inf

    def score(metrics: Mapping[str, Any] | None) -> float:
      value = (metrics or {}).get(best_metric)  # old metrics without it rank worst
      return worst if value is None else float(value)

    policies: list[Any] = [ocm.LatestN(n=keep_last)]
    if best_metric is not None:  # BestN keeps the tail of the list sorted by score
      policies.append(
          ocm.BestN(get_metric_fn=score, reverse=best_mode == "min", n=keep_best,
                    keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        best_fn=score if best_metric is not None else None,  # else orbax drops metrics
        best_mode=best_mode,
        enable_async_checkpointing=True,
        create=True)
    # A registry lets a fresh manager read the item's metadata before any save/restore.
    registry = ocp.handlers.create_default_handler_registry(
        **{_ITEM: ocp.StandardCheckpointHandler(), _SUMS: ocp.JsonCheckpointHandler()})
    orbax_logs.quiet_orbax()
    self._mngr = ocp.CheckpointManager(directory, options=options, handler_registry=registry)
    self.directory, self._forget = self._mngr.directory, None

  def _path(self, step: int) -> str:
    return str(self.directory / str(step))

  def save(self, step: int, state: Any, metrics: Mapping[str, Any] | None = None) -> None:
    """Starts saving `state` as `step`; a finite `metrics[best_metric]` ranks it as best."""
    step = int(step)
    if step in self._mngr.all_steps():
      _log.warning("checkpoint %s already exists; not overwriting it", self._path(step))
      return
    latest = self._mngr.latest_step()
    if latest is not None and step < latest:
      raise CheckpointError(
          f"cannot save checkpoint {self._path(step)}: it is older than the latest step "
          f"{latest} there; resume from the latest step or use a new --workdir")
    if self._forget is None:  # a second stop signal exits at once: no half-made step is left
      self._forget = entry.undo_on_signal(functools.partial(remove_unfinished, self.directory))
    try:
      with orbax_logs.metricless_save():
        self._mngr.save(
            step,
            args=ocp.args.Composite(**{
                _ITEM: ocp.args.StandardSave(state), _SUMS: ocp.args.JsonSave(
                    verify.checksums(state))
            }),
            metrics=self._json_metrics(metrics),
            force=True,  # the training loop decides when to save, not orbax's policy
            custom_metadata={_FORMAT_KEY: verify.FORMAT},
        )
    except Exception as e:  # a previous save's failure surfaces here too
      raise self._write_error(e) from e

  def _write_error(self, error: Exception) -> CheckpointError:
    with contextlib.suppress(Exception):  # the same failure
      self._mngr.wait_until_finished()
    remove_unfinished(self.directory)
    return CheckpointError(
        f"writing a checkpoint into {self.directory} failed ({_first_line(error)}); free disk "
        f"space or fix the directory's permissions, then resume: the checkpoints already there "
        f"({self.all_steps()}) are kept")

  def _json_metrics(self, metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Finite scalar metrics as floats; None unless they hold a finite `best_metric`."""
    if self.best_metric is None or not metrics:
      return None
    out: dict[str, float] = {}
    for key, value in metrics.items():
      try:
        value = float(value)
      except (TypeError, ValueError):
        continue  # non-scalar metrics are not stored
      if math.isfinite(value):
        out[str(key)] = value
    return out if self.best_metric in out else None

  def wait(self) -> None:
    """Blocks until pending saves are committed; a failed save raises CheckpointError."""
    try:
      self._mngr.wait_until_finished()
    except Exception as e:
      raise self._write_error(e) from e

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def best_step(self) -> int | None:
    """Best step by `best_metric`; None without a metric-bearing checkpoint."""
    return self._mngr.best_step() if self.best_metric is not None else None

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def restore(self, state_template: S, step: int | None = None) -> S:
    """Restores `step` (default latest) into the template's type, static fields and devices,
    verified: it must have checksums, its arrays must match them and be finite, and the state's
    own `step` (when it has one) must be `step`; else CheckpointError. `state_template` may be
    concrete or abstract (`jax.eval_shape`)."""
    self.wait()
    steps = self.all_steps()
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise CheckpointError(
          f"no checkpoint in {self.directory}; train first or pass the --workdir that has one")
    if step not in steps:
      raise CheckpointError(
          f"checkpoint {self._path(step)} does not exist; pick one of the steps {steps}")
    target = abstract_like(state_template)
    version = self.format_of(step)
    if not verify.readable(version):
      raise CheckpointError(verify.format_problem(f"checkpoint {self._path(step)}", version))
    try:  # corrupt/partial files: one clear error instead of orbax internals
      detail = self._mismatch(step, target)
      if detail is None:
        args = ocp.args.Composite(**{_ITEM: ocp.args.StandardRestore(target)})
        state = self._mngr.restore(step, args=args)[_ITEM]
        detail = verify.corruption(state, step, self._saved_checksums(step))
        if detail is None:
          return state
        raise CheckpointError(f"checkpoint {self._path(step)} does not verify ({detail}); "
                              f"delete it and restore an earlier step of {steps} (--step N), or "
                              "use a new --workdir")
    except CheckpointError:
      raise
    except Exception as e:
      raise CheckpointError(f"checkpoint {self._path(step)} could not be read ({_first_line(e)}); "
                            f"restore another step of {steps} or use a new --workdir") from e
    if version != verify.FORMAT:
      raise CheckpointError(verify.format_problem(f"checkpoint {self._path(step)}", version,
                                                  detail))
    raise CheckpointError(
        f"checkpoint {self._path(step)} does not match the model built from the config "
        f"({detail}); use the config it was trained with or a new --workdir")

  def format_of(self, step: int) -> Any:
    """The checkpoint format recorded with `step`: 1 when none is (written before formats were
    recorded); whatever an edited record holds, which `restore` refuses unless it is readable."""
    try:
      custom = self._mngr.metadata(step).custom_metadata
    except Exception:  # pylint: disable=broad-except  (restore then says what is wrong)
      custom = None
    return custom.get(_FORMAT_KEY, 1) if isinstance(custom, dict) else 1

  def restore_verified(self, state_template: S, newest: int | None = None) -> tuple[S, int]:
    """(state, step) of the newest checkpoint (at most `newest`) that restores and verifies into
    `state_template` (or `state_template(step)` where it is callable); newer ones that do not are
    logged with the reason. Raises CheckpointError when none does."""
    steps = [s for s in reversed(self.all_steps()) if newest is None or s <= newest]
    if not steps:
      return self.restore(state_template, newest), newest  # raises the right error
    skipped, tried = [], set()
    for _ in range(3):  # a run saving meanwhile may replace them all: then try its new ones
      for step in steps:
        try:
          template = state_template(step) if callable(state_template) else state_template
          return self.restore(template, step), step
        except CheckpointError as e:
          _log.warning("skipping checkpoint %s: %s", self._path(step), e)
          skipped.append(f"{step}: {e}")
      tried.update(steps)
      self._mngr.reload()
      steps = [
          s for s in reversed(self.all_steps())
          if s not in tried and (newest is None or s <= newest)
      ]
      if not steps:
        break
    raise CheckpointError(f"no checkpoint in {self.directory} can be restored: " +
                          "; ".join(skipped))

  def delete_after(self, step: int) -> list[int]:
    """Deletes the checkpoints newer than `step` (so that training can go on from it)."""
    self.wait()
    newer = [s for s in self.all_steps() if s > step]
    for s in newer:
      _log.warning("deleting checkpoint %s: training goes on from step %d", self._path(s), step)
      self._mngr.delete(s)
    return newer

  def _saved_checksums(self, step: int) -> dict[str, str] | None:
    """The checksums saved with `step`; None when they are missing or unreadable."""
    if not (self.directory / str(step) / _SUMS).exists():
      return None
    try:
      saved = self._mngr.restore(step,
                                 args=ocp.args.Composite(**{_SUMS: ocp.args.JsonRestore()}))[_SUMS]
    except Exception:  # pylint: disable=broad-except
      return None
    return saved if isinstance(saved, dict) else None

  def _mismatch(self, step: int, target: Any) -> str | None:
    """The first path where the saved arrays differ from `target`, or None."""
    meta = self._mngr.item_metadata(step)
    item = meta[_ITEM] if meta is not None and _ITEM in meta else None
    if item is None:
      return f"it has no '{_ITEM}' item"
    return verify.shape_mismatch(getattr(item, "tree", item), target)

  def close(self) -> None:
    """Waits for pending saves, releases orbax resources; a failed save raises CheckpointError."""
    try:
      self._mngr.close()
    except Exception as e:
      raise self._write_error(e) from e
    finally:
      if self._forget is not None:
        self._forget()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def remove_unfinished(directory: str | os.PathLike[str]) -> list[str]:
  """Removes the ``<step>.orbax-checkpoint-tmp*`` folders of cut-short saves (never a step)."""
  return safe_files.remove_leftovers(str(directory), r"\d+\.orbax-checkpoint-tmp.*")


def _first_line(error: Exception) -> str:
  """`error`'s type and the first line of its message, at most 300 characters."""
  return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"
