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

import hashlib
import logging
import math
import os
import sys
from typing import Any, Mapping, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

__all__ = ["CheckpointError", "Checkpoints", "abstract_like", "FORMAT"]

_log = logging.getLogger(__name__)
_ITEM = "state"
_SUMS = "checksums"
# The checkpoint format: its layout and what its state means. Raise it when a change makes
# checkpoints unreadable by the code before it, and list in READABLE_FORMATS the ones still read.
FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: written before checkpoints recorded their format
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


def _orbax_report(record: logging.LogRecord) -> bool:
  """An absl logger filter: orbax's warnings and error reports (a failed background read or
  write, with its thread's traceback) go to the debug log; the caller gets one error or warning
  of ours that says what failed and what was done about it."""
  if record.levelno < logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname:
    return True
  _log.debug("orbax: %s", record.getMessage(), exc_info=record.exc_info)
  return False


def _is_closed_loop_callback(unraisable: Any) -> bool:
  """Whether an unraisable exception is tensorstore completing a read for an asyncio loop that
  orbax has closed already (after another read of the same restore or save failed)."""
  if unraisable.object is not None or not isinstance(unraisable.exc_value, RuntimeError):
    return False
  tb = unraisable.exc_traceback
  while tb is not None and tb.tb_frame.f_code.co_name != "call_soon_threadsafe":
    tb = tb.tb_next
  return tb is not None


def _quiet_orbax() -> None:
  """Keeps orbax's thread tracebacks off stderr, in the debug log (once per process)."""
  logging.getLogger("absl").addFilter(_orbax_report)  # a no-op when it is there already
  previous = sys.unraisablehook
  if getattr(previous, "quiets_orbax", False):
    return

  def hook(unraisable: Any) -> None:
    if _is_closed_loop_callback(unraisable):
      _log.debug("orbax: a read completed after its event loop closed (%s)",
                 unraisable.exc_value)
    else:
      previous(unraisable)

  hook.quiets_orbax = True
  sys.unraisablehook = hook


class Checkpoints:
  """Saves and restores train states in `directory`, keeping the last and the best steps.

    Saving an existing step is skipped with a warning, never overwritten (that would delete a good
    checkpoint first). Saving a step older than the latest one raises `CheckpointError`.
    """

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
      policies.append(ocm.BestN(get_metric_fn=score, reverse=best_mode == "min", n=keep_best,
                                keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        best_fn=score if best_metric is not None else None,  # else orbax drops metrics
        best_mode=best_mode, enable_async_checkpointing=True, create=True)
    # A registry lets a fresh manager read the item's metadata before any save/restore.
    registry = ocp.handlers.create_default_handler_registry(
        **{_ITEM: ocp.StandardCheckpointHandler(), _SUMS: ocp.JsonCheckpointHandler()})
    _quiet_orbax()
    self._mngr = ocp.CheckpointManager(directory, options=options, handler_registry=registry)
    self.directory = self._mngr.directory

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
    # Metric-less saves are fine (LatestN only): drop orbax's warning about them for this call.
    absl_logger = logging.getLogger("absl")

    def quiet(record: logging.LogRecord) -> bool:
      return not str(record.msg).startswith("Requested `tracked_metric`")

    absl_logger.addFilter(quiet)
    try:
      self._mngr.save(
          step,
          args=ocp.args.Composite(**{_ITEM: ocp.args.StandardSave(state),
                                     _SUMS: ocp.args.JsonSave(checksums(state))}),
          metrics=self._json_metrics(metrics),
          force=True,  # the training loop decides when to save, not orbax's policy
          custom_metadata={_FORMAT_KEY: FORMAT},
      )
    except Exception as e:  # a previous save's failure surfaces here too
      raise self._write_error(e) from e
    finally:
      absl_logger.removeFilter(quiet)

  def _write_error(self, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"writing a checkpoint into {self.directory} failed ({_first_line(error)}); "
        f"free disk space or fix the directory's permissions, then resume: the checkpoints "
        f"already there ({self.all_steps()}) are kept")

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
    own `step` (when it has one) must be `step`; else CheckpointError.

    `state_template` may be concrete or abstract (`jax.eval_shape`).
    """
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
    if not _readable(version):
      raise self._format_error(step, version)
    try:  # corrupt/partial files: one clear error instead of orbax internals
      detail = self._mismatch(step, target)
      if detail is None:
        args = ocp.args.Composite(**{_ITEM: ocp.args.StandardRestore(target)})
        state = self._mngr.restore(step, args=args)[_ITEM]
        detail = self._corruption(step, state)
        if detail is None:
          return state
        raise CheckpointError(f"checkpoint {self._path(step)} does not verify ({detail}); "
                              f"delete it and restore an earlier step of {steps} (--step N), or "
                              "use a new --workdir")
    except CheckpointError:
      raise
    except Exception as e:
      raise CheckpointError(
          f"checkpoint {self._path(step)} could not be read ({_first_line(e)}); "
          f"restore another step of {steps} or use a new --workdir") from e
    if version != FORMAT:
      raise self._format_error(step, version, detail)
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

  def _format_error(self, step: int, version: Any, detail: str | None = None) -> CheckpointError:
    """The error for `step` of checkpoint format `version`, not FORMAT: one this code cannot read,
    or (with `detail`, where its state does not fit the model) one an older version wrote."""
    where = f"checkpoint {self._path(step)} is of checkpoint format {version!r}"
    if detail is not None:
      return CheckpointError(
          f"{where}{' (written before checkpoints recorded their format)' * (version == 1)}, not "
          f"this aigc_jax's format {FORMAT}, and its state does not fit the model built from the "
          f"config ({detail}): an older aigc_jax wrote it; sample or evaluate it with "
          "that version (or the config it was trained with), or train anew in a new --workdir")
    newer = isinstance(version, int) and version > FORMAT
    return CheckpointError(
        f"{where}, which this aigc_jax cannot read (it writes format {FORMAT} and reads formats "
        f"{', '.join(map(str, READABLE_FORMATS))}): "
        + ("a newer aigc_jax wrote it; update aigc_jax" if newer else
           "use the aigc_jax that wrote it") + ", or use a new --workdir")

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
      steps = [s for s in reversed(self.all_steps()) if s not in tried
               and (newest is None or s <= newest)]
      if not steps:
        break
    raise CheckpointError(f"no checkpoint in {self.directory} can be restored: "
                          + "; ".join(skipped))

  def delete_after(self, step: int) -> list[int]:
    """Deletes the checkpoints newer than `step` (so that training can go on from it)."""
    self.wait()
    newer = [s for s in self.all_steps() if s > step]
    for s in newer:
      _log.warning("deleting checkpoint %s: training goes on from step %d", self._path(s), step)
      self._mngr.delete(s)
    return newer

  def _corruption(self, step: int, state: Any) -> str | None:
    """Why the restored `state` of `step` cannot be trusted, or None: no checksums, arrays that
    differ from them, a state of another step (moved or copied), or a non-finite leaf."""
    saved = self._saved_checksums(step)
    if not saved:
      return ("it has no checksums: written before checkpoints had them, or edited, so its "
              "arrays cannot be verified")
    got = checksums(state)
    bad = next((p for p in sorted(set(saved) | set(got)) if saved.get(p) != got.get(p)), None)
    if bad is not None:
      return f"the arrays at {bad} differ from the checksum saved with them"
    inside = getattr(state, "step", None)  # a sweep's stacked state holds one per member
    if inside is not None and np.any(np.asarray(inside) != step):
      found = sorted({int(s) for s in np.asarray(inside).ravel()})
      return (f"its state is of step {', '.join(map(str, found))}, not {step}: it was moved or "
              "copied from another step")
    bad = first_non_finite(state)
    return None if bad is None else f"{bad} is not finite"

  def _saved_checksums(self, step: int) -> dict[str, str] | None:
    """The checksums saved with `step`; None when they are missing or unreadable."""
    if not (self.directory / str(step) / _SUMS).exists():
      return None
    try:
      saved = self._mngr.restore(step, args=ocp.args.Composite(
          **{_SUMS: ocp.args.JsonRestore()}))[_SUMS]
    except Exception:  # pylint: disable=broad-except
      return None
    return saved if isinstance(saved, dict) else None

  def _mismatch(self, step: int, target: Any) -> str | None:
    """The first path where the saved arrays differ from `target`, or None."""
    meta = self._mngr.item_metadata(step)
    item = meta[_ITEM] if meta is not None and _ITEM in meta else None
    if item is None:
      return f"it has no '{_ITEM}' item"
    saved = ocp.tree.to_flat_dict(getattr(item, "tree", item))
    wanted = ocp.tree.to_flat_dict(target)
    for path, want in wanted.items():
      have = tuple(saved[path].shape) if path in saved else "missing"
      if have != tuple(want.shape):
        return f"'{'/'.join(path)}': {have} in the checkpoint, {want.shape} in the model"
    extra = next((p for p in saved if p not in wanted), None)
    if extra is None:
      return None
    return f"'{'/'.join(extra)}' is in the checkpoint but not in the model"

  def close(self) -> None:
    """Waits for pending saves, releases orbax resources; a failed save raises CheckpointError."""
    try:
      self._mngr.close()
    except Exception as e:
      raise self._write_error(e) from e

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def _first_line(error: Exception) -> str:
  """`error`'s type and the first line of its message, at most 300 characters."""
  return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def _readable(version: Any) -> bool:
  return not isinstance(version, bool) and version in READABLE_FORMATS


def checksums(tree: Any) -> dict[str, str]:
  """The sha256 of every array leaf's bytes (C order), by its key path."""
  return {jax.tree_util.keystr(path): hashlib.sha256(
      np.ascontiguousarray(np.asarray(leaf)).tobytes()).hexdigest()
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def first_non_finite(tree: Any) -> str | None:
  """The key path of the first floating-point leaf of `tree` that is not finite, or None."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.floating) and not np.isfinite(leaf).all():
      return jax.tree_util.keystr(path)
  return None


def all_finite(tree: Any) -> bool:
  """Whether every floating-point leaf of `tree` is finite."""
  return first_non_finite(tree) is None
