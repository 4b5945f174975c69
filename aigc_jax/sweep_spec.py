"""A sweep's spec (sweep.json: the shared config, each varied key's values per member,
halve_every, the members' stops) and what follows from it: its members, their folders, and the
plots and summary table over them."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from aigc_jax import config as config_lib
from aigc_jax import plot
from aigc_jax import population as pop_lib
from aigc_jax import safe_files

log = logging.getLogger("aigc_jax.sweep_train")

SWEEP_FILE = "sweep.json"


def member_dir(workdir: str, member: int) -> str:
  return os.path.join(workdir, "members", f"{member:02d}")


def read_spec(workdir: str) -> dict | None:
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    return None
  return read_spec_file(path)


def write_spec(workdir: str, spec: dict) -> None:
  safe_files.write_text(os.path.join(workdir, SWEEP_FILE), json.dumps(spec, indent=2))


def make_spec(config, varies: list[str], members: int | None = None, halve_every: int = 0) -> dict:
  """sweep.json's content for a new sweep of `config` with the `varies` ('KEY=SPEC') arguments;
  raises ConfigError when a member's config is invalid."""
  values = pop_lib.member_values(config, varies, members)
  pop_lib.member_configs(config, values)
  spec = {"config": config.to_dict(), "values": values, "halve_every": halve_every, "stops": []}
  return json.loads(json.dumps(spec))  # as sweep.json holds it (tuples become lists)


def resume_spec(workdir: str, spec: dict) -> dict:
  """The spec saved in `workdir`, when there is one, else `spec`; ConfigError when the saved one
  is of another config, other values or another halve_every."""
  saved = read_spec(workdir)
  if saved is not None and (saved["config"], saved["values"],
                            saved.get("halve_every")) != (spec["config"], spec["values"],
                                                          spec.get("halve_every")):
    raise config_lib.ConfigError(
        f"{workdir} holds a sweep of another config or other values ({SWEEP_FILE}); resume "
        f"it with python -m aigc_jax.sweep --workdir {workdir}, or use a new --workdir")
  return saved or spec


def alive_at(spec: dict, step: int) -> list[int]:
  """The members still training after the stops at steps <= `step`."""
  stopped = {m for stop in spec["stops"] if stop["step"] <= step for m in stop["members"]}
  return [m for m in range(num_members(spec)) if m not in stopped]


def num_members(spec: dict) -> int:
  return len(next(iter(spec["values"].values())))


def write_plots(workdir: str, spec: dict) -> None:
  """plots/members_{test,train}.png: the members' curves overlaid (a warning when they fail)."""
  dirs = [member_dir(workdir, m) for m in range(num_members(spec))]
  plots = safe_files.make_dir(os.path.join(workdir, "plots"))
  labels = [f"{m:02d}: {pop_lib.describe(spec['values'], m)}" for m in range(len(dirs))]
  for split in ("test", "train"):
    try:
      figure = plot.overlay_figure(dirs, split, labels)
      plot.save_figure(figure, os.path.join(plots, f"members_{split}.png"))
    except (ValueError, OSError) as e:
      log.warning("could not draw the members' %s curves (%s)", split, e)


def summary(workdir: str, spec: dict, best: str, mode: str) -> str:
  """The members' table: values, how each ended, last and best test metric `best` (the better
  by `mode`, 'min' or 'max')."""
  ended = {
      m: f"stopped at {s['step']} ({s['reason']})" for s in spec["stops"] for m in s["members"]
  }
  lines = [
      f"member | {' | '.join(spec['values'])} | ended | last {best} | best {best}",
      "|".join(["---"] * (len(spec["values"]) + 4))
  ]
  scores = {}
  for m in range(num_members(spec)):
    values = [
        r[best] for r in plot.read_records(os.path.join(member_dir(workdir, m), "metrics.jsonl"))
        if r.get("split") == "test" and best in r
    ]
    pick = min if mode == "min" else max
    scores[m] = pick(values) if values else float("nan")
    cells = [f"{spec['values'][k][m]:.4g}" for k in spec["values"]]
    last = f"{values[-1]:.4f}" if values else "-"
    lines.append(f"{m:02d} | {' | '.join(cells)} | {ended.get(m, 'finished')} | {last} | "
                 f"{scores[m]:.4f}")
  finite = [m for m in scores if np.isfinite(scores[m])]
  if finite:
    top = (min if mode == "min" else max)(finite, key=scores.get)
    lines.append(f"best: member {top:02d} ({pop_lib.describe(spec['values'], top)}), "
                 f"{best} {scores[top]:.4f}; run dir {member_dir(workdir, top)}")
  return "\n".join(lines)


SPEC_KEYS = ("config", "values", "halve_every", "stops")


def read_spec_file(path: str) -> dict:
  """A sweep's spec (sweep.json), checked: `config` a valid config, `values` one list per varied
  key of one value per member, `halve_every` an int >= 0, `stops` the members' stops. Raises
  ConfigError naming the file, the key and the problem."""
  fix = "restore the file from a backup, or start the sweep again in a new --workdir"
  try:
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
  except (OSError, ValueError, RecursionError) as e:
    raise config_lib.ConfigError(f"{path} cannot be read as JSON ({e}); {fix}") from None
  keys = set(spec) if isinstance(spec, dict) else None
  if keys is None or not set(SPEC_KEYS) - {"halve_every"} <= keys <= set(SPEC_KEYS):
    what = f"an object with {sorted(spec)}" if keys is not None else type(spec).__name__
    raise config_lib.ConfigError(f"{path} holds {what}, not a sweep's object of {SPEC_KEYS}; {fix}")
  try:
    if not isinstance(spec["config"], dict):
      raise config_lib.ConfigError("'config' is not an object of config keys")
    config = config_lib.from_saved(spec["config"], "'config'", fix="")
    _check_values(config, spec["values"])
    every = spec.get("halve_every", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
      raise config_lib.ConfigError(f"'halve_every' is {every!r}, not an integer >= 0")
    _check_stops(spec["stops"], len(next(iter(spec["values"].values()))))
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"{path}: {e}; {fix}") from None
  return spec


def _check_values(config, values: Any) -> None:
  """Raises ConfigError unless `values` is {varied key: one value of its type per member}."""
  if not isinstance(values, dict) or not values:
    raise config_lib.ConfigError(f"'values' is {values!r}, not an object of varied keys")
  for key, column in values.items():
    try:
      pop_lib.check_key(config, key)
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f"'values': {e}") from None
    if not isinstance(column, list) or len(column) != len(next(iter(values.values()))):
      raise config_lib.ConfigError(f"'values' of {key} is not a list of one value per member")
    problem = config_lib.type_problem(column, (config[key],))
    if problem is not None or not column:
      raise config_lib.ConfigError(f"'values' of {key} is {problem or 'empty'}")


def _check_stops(stops: Any, members: int) -> None:
  """Raises ConfigError unless `stops` is a list of {step, members, reason} of known members."""
  if not isinstance(stops, list):
    raise config_lib.ConfigError(f"'stops' is {stops!r}, not a list")
  for stop in stops:
    ok = isinstance(stop, dict) and set(stop) == {"step", "members", "reason"}
    ok = ok and config_lib.type_problem(stop["step"], 0) is None and stop["step"] >= 0
    ok = ok and isinstance(stop["reason"], str) and isinstance(stop["members"], list)
    if not ok or not all(
        config_lib.type_problem(m, 0) is None and 0 <= m < members for m in stop["members"]):
      raise config_lib.ConfigError(f"'stops' holds {stop!r}, not a stop of {{'step': an integer "
                                   f">= 0, 'members': some of 0 to {members - 1}, 'reason': a "
                                   "string}")
