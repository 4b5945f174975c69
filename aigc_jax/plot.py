"""Curves of a run's metrics.jsonl: train losses and eval metrics against the step.

`write_curves(workdir)` writes workdir/plots/train.png and workdir/plots/eval.png, one subplot
per metric; `CurveDrawer` does it on a background thread (training does not wait for it). The
command overlays several runs, one line per run:

python -m aigc_jax.plot --workdir A [--workdir B ...] --out FILE.png [--split train|test]
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading

from absl import flags
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from aigc_jax import command_line
from aigc_jax import entry
from aigc_jax import safe_files

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "test": "eval"}  # metrics.jsonl split -> picture name
SKIPPED = ("steps_per_second", "learning_rate")  # a speed and a setting, not curves to learn from
PROGRAM = "python -m aigc_jax.plot"
FLAGS = command_line.new_flags()
flags.DEFINE_multi_string("workdir", [], "A training run's directory; one --workdir per run.",
                          flag_values=FLAGS)
flags.DEFINE_string("out", None, "The PNG to write.", flag_values=FLAGS)
flags.DEFINE_enum("split", "test", sorted(SPLITS), "test: the eval metrics; train: the train "
                  "losses.", flag_values=FLAGS)


def read_records(path: str) -> list[dict]:
  """The train and test records of a metrics.jsonl; other splits and unparseable lines skipped."""
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and record.get("split") in SPLITS and "step" in record:
        records.append(record)
  return records


def curves(records: list[dict], split: str) -> dict[str, tuple[list, list]]:
  """{metric: (steps, values)} of one split, metrics in first-seen order, numbers only."""
  out = {}
  for record in records:
    if record.get("split") != split:
      continue
    for name, value in record.items():
      if name in ("step", "split") or name in SKIPPED or not isinstance(value, (int, float)):
        continue
      steps, values = out.setdefault(name, ([], []))
      steps.append(record["step"])
      values.append(value)
  return out


COMPANIONS = ("_floor", "_std")  # drawn in their metric's panel: a dashed line, a band


def panels(runs: dict[str, dict[str, tuple[list, list]]]) -> dict[str, str]:
  """{metric: its panel's title} of the metrics that get a panel. A metric's `_floor` and `_std`
  are drawn in its panel; a curve equal to an earlier one in every run is named in its title."""
  names = list(dict.fromkeys(name for run in runs.values() for name in run))
  titles = {}
  for name in names:
    base = next((name[:-len(c)] for c in COMPANIONS if name.endswith(c)), None)
    if base in names:
      continue
    same = next((t for t in titles if all(run.get(t) == run.get(name) for run in runs.values())),
                None)
    if same is None:
      titles[name] = name
    else:
      titles[same] += f" = {name}"
  return titles


def _draw(ax, run: dict[str, tuple[list, list]], name: str, label: str) -> None:
  """One run's curve of `name`, with its floor (dashed) and its +-std band where it has them."""
  steps, values = run[name]
  line, = ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
  if run.get(f"{name}_std", ([],))[0] == steps:
    std = run[f"{name}_std"][1]
    ax.fill_between(steps, [v - s for v, s in zip(values, std)],
                    [v + s for v, s in zip(values, std)], color=line.get_color(), alpha=0.2)
  if f"{name}_floor" in run:
    ax.plot(*run[f"{name}_floor"], linestyle="--", color=line.get_color(),
            label=f"{label} floor (real vs real)")


def curves_figure(runs: dict[str, dict[str, tuple[list, list]]], title: str):
  """A Figure with one subplot per metric (`panels`) and one line per run ({run name: curves})."""
  titles = panels(runs)
  ncols = min(3, max(1, len(titles)))
  nrows = max(1, math.ceil(len(titles) / ncols))
  fig = figure_lib.Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)  # headless Agg, without touching pyplot's global backend
  fig.suptitle(title)
  for i, (name, panel_title) in enumerate(titles.items()):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    for label, run in runs.items():
      if name in run:
        _draw(ax, run, name, label)
    ax.set_title(panel_title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(runs) > 1 or f"{name}_floor" in next(iter(runs.values())):
      ax.legend(fontsize=7)
  return fig


def split_figures(workdir: str) -> dict[str, object]:
  """{picture name: Figure} of a run's train and eval curves (splits without records left out)."""
  records = read_records(os.path.join(workdir, "metrics.jsonl"))
  name = os.path.basename(os.path.normpath(workdir))
  figures = {}
  for split, picture in SPLITS.items():
    run = curves(records, split)
    if run:
      figures[picture] = curves_figure({name: run}, f"{name}: {picture}")
  return figures


def save_figure(fig, path: str, target: str = "--workdir") -> str:
  """Writes `fig` as a PNG to `path`, replaced whole (`safe_files.atomic_write`: a reader never
  sees half a picture; a link at `path` is replaced, not followed; WriteError when it cannot be
  written, whose fix is another `target`). Returns `path`."""
  return safe_files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80), target)


def write_curves(workdir: str) -> list[str]:
  """Writes workdir/plots/train.png and eval.png from workdir/metrics.jsonl; returns the paths.

  A split with no records yet gets no picture; a missing metrics.jsonl writes nothing. A
  picture that cannot be written is logged as a warning: curves never stop a training run.
  """
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return []
  plots, paths = os.path.join(workdir, "plots"), []
  try:
    safe_files.make_dir(plots)
    for picture, fig in split_figures(workdir).items():
      paths.append(save_figure(fig, os.path.join(plots, f"{picture}.png")))
  except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: WorkdirError too
    log.warning("could not write the curves in %s (%s)", plots, e)
  return paths


class CurveDrawer:
  """`write_curves(workdir)` on a background thread: `request()` returns at once; requests made
  while a drawing runs are merged into one more drawing, started after it; `close()` waits for
  the drawing of the last request (the curves then show every record written before it)."""

  def __init__(self, workdir: str):
    self.workdir, self.drawings = workdir, 0
    self._wake, self._thread = threading.Condition(), None
    self._pending = self._closed = False

  def request(self) -> None:
    with self._wake:
      if self._closed:
        raise RuntimeError("CurveDrawer.request after close")
      self._pending = True
      if self._thread is None:
        self._thread = threading.Thread(target=self._run, name="curves", daemon=True)
        self._thread.start()
      self._wake.notify()

  def _run(self) -> None:
    while True:
      with self._wake:
        self._wake.wait_for(lambda: self._pending or self._closed)
        if not self._pending:
          return
        self._pending = False
      write_curves(self.workdir)  # logs, never raises, on OSError and matplotlib errors
      self.drawings += 1

  def close(self) -> None:
    """Waits for the requested drawing (if any); later requests raise."""
    with self._wake:
      self._closed = True
      self._wake.notify()
    if self._thread is not None:
      self._thread.join()


def overlay_figure(workdirs: list[str], split: str, labels: list[str] | None = None):
  """The Figure overlaying one split's curves of several runs, labelled by `labels` (default:
  their workdirs' names)."""
  runs = {}
  for i, workdir in enumerate(workdirs):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
      raise ValueError(f"{path} does not exist; pass --workdir directories of training runs")
    label = labels[i] if labels else os.path.basename(os.path.normpath(workdir)) or workdir
    while label in runs:  # two runs of the same name: keep both lines
      label += "'"
    runs[label] = curves(read_records(path), split)
  if not any(runs.values()):
    raise ValueError(f"no {split} records in {', '.join(workdirs)}; train them first, or pass "
                     f"--split {'test' if split == 'train' else 'train'}")
  return curves_figure(runs, f"{SPLITS[split]} curves")


def main(argv: list[str] | None = None) -> int:
  """The command, on its arguments `argv` (default sys.argv[1:]): 0, or 2 after one error line."""
  entry.begin("drawing the curves", module=__name__)
  others, _ = command_line.parse(FLAGS, argv, __doc__, PROGRAM, positional=True)
  if others:
    command_line.usage_error(f"unexpected arguments {others}: name each run with a --workdir of "
                             "its own, e.g. --workdir runs/a --workdir runs/b")
  command_line.use_one_log_format(__name__)
  with entry.command():
    return overlay_command()


def overlay_command() -> int:
  """The command's work on its parsed FLAGS: 0, or 2 after one error line."""
  if not FLAGS.workdir or not FLAGS.out:
    print(
        "error: --workdir and --out are required, e.g. python -m aigc_jax.plot "
        "--workdir runs/a --workdir runs/b --out compare.png", file=sys.stderr)
    return 2
  if not FLAGS.out.lower().endswith(".png") or os.path.isdir(FLAGS.out):
    print(f"error: --out must name a .png file, got {FLAGS.out!r}", file=sys.stderr)
    return 2
  try:
    fig = overlay_figure(FLAGS.workdir, FLAGS.split)
    safe_files.make_dir(os.path.dirname(os.path.abspath(FLAGS.out)))
    save_figure(fig, FLAGS.out, target="--out")
  except (ValueError, safe_files.WorkdirError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # reading metrics.jsonl
    print(f"error: {entry.describe(e) or e}", file=sys.stderr)
    return 2
  print(f"wrote {FLAGS.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
