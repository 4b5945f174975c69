"""A sweep's spec (sweep.json: the shared config, each varied key's values per member,
halve_every, the members' stops) and what follows from it: its members, their folders, and the
plots and summary table over them."""

from __future__ import annotations

import json
import logging
import os

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
  return pop_lib.read_spec_file(path)  # checked: ConfigError naming the key and the problem


def write_spec(workdir: str, spec: dict) -> None:
  safe_files.write_text(os.path.join(workdir, SWEEP_FILE), json.dumps(spec, indent=2))


def make_spec(config, varies: list[str], members: int | None = None,
              halve_every: int = 0) -> dict:
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
  if saved is not None and (saved["config"], saved["values"], saved.get("halve_every")) != (
      spec["config"], spec["values"], spec.get("halve_every")):
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
  for split in ("test", "train"):
    try:
      figure = plot.overlay_figure(dirs, split)
      plot.save_figure(figure, os.path.join(plots, f"members_{split}.png"))
    except (ValueError, OSError) as e:
      log.warning("could not draw the members' %s curves (%s)", split, e)


def summary(workdir: str, spec: dict, best: str, mode: str) -> str:
  """The members' table: values, how each ended, last and best test metric `best` (the better
  by `mode`, 'min' or 'max')."""
  ended = {m: f"stopped at {s['step']} ({s['reason']})"
           for s in spec["stops"] for m in s["members"]}
  lines = [f"member | {' | '.join(spec['values'])} | ended | last {best} | best {best}",
           "|".join(["---"] * (len(spec["values"]) + 4))]
  scores = {}
  for m in range(num_members(spec)):
    values = [r[best] for r in plot.read_records(
        os.path.join(member_dir(workdir, m), "metrics.jsonl"))
        if r.get("split") == "test" and best in r]
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
