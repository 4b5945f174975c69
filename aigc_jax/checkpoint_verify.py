"""What makes a restored checkpoint trusted: its format, its checksums, shapes that fit the model,
the step it says it is, and finite arrays. Each check returns why it fails, or None."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

# The checkpoint format: its layout and what its state means. Raise it when a change makes
# checkpoints unreadable by the code before it, and list in READABLE_FORMATS the ones still read.
FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: written before checkpoints recorded their format


def readable(version: Any) -> bool:
  return not isinstance(version, bool) and version in READABLE_FORMATS


def format_problem(where: str, version: Any, detail: str | None = None) -> str:
  """Why `where`, of checkpoint format `version` (not FORMAT), is refused: a format this code
  cannot read, or (with `detail`, where its state does not fit the model) one an older version
  wrote."""
  where = f"{where} is of checkpoint format {version!r}"
  if detail is not None:
    return (f"{where}{' (written before checkpoints recorded their format)' * (version == 1)}, "
            f"not this aigc_jax's format {FORMAT}, and its state does not fit the model built from "
            f"the config ({detail}): an older aigc_jax wrote it; sample or evaluate it with that "
            "version (or the config it was trained with), or train anew in a new --workdir")
  newer = isinstance(version, int) and version > FORMAT
  return (f"{where}, which this aigc_jax cannot read (it writes format {FORMAT} and reads formats "
          f"{', '.join(map(str, READABLE_FORMATS))}): " +
          ("a newer aigc_jax wrote it; update aigc_jax"
           if newer else "use the aigc_jax that wrote it") + ", or use a new --workdir")


def shape_mismatch(saved_tree: Any, target: Any) -> str | None:
  """The first path where the saved arrays' shapes differ from `target`'s, or None."""
  saved = ocp.tree.to_flat_dict(saved_tree)
  wanted = ocp.tree.to_flat_dict(target)
  for path, want in wanted.items():
    have = tuple(saved[path].shape) if path in saved else "missing"
    if have != tuple(want.shape):
      return f"'{'/'.join(path)}': {have} in the checkpoint, {want.shape} in the model"
  extra = next((p for p in saved if p not in wanted), None)
  if extra is None:
    return None
  return f"'{'/'.join(extra)}' is in the checkpoint but not in the model"


def corruption(state: Any, step: int, saved: dict[str, str] | None) -> str | None:
  """Why the restored `state` of `step` cannot be trusted, or None: no `saved` checksums, arrays
  that differ from them, a state of another step (moved or copied), or a non-finite leaf."""
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


def checksums(tree: Any) -> dict[str, str]:
  """The sha256 of every array leaf's bytes (C order), by its key path."""
  return {
      jax.tree_util.keystr(path):
          hashlib.sha256(np.ascontiguousarray(np.asarray(leaf)).tobytes()).hexdigest()
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


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
