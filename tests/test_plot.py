"""Curves of metrics.jsonl: a run's train.png and eval.png, and the overlay of several runs."""

import json
import os
import subprocess
import sys
import threading

import pytest
from PIL import Image

from aigc_jax import plot

pytestmark = pytest.mark.curves  # the real plot.write_curves
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(workdir, steps=(10, 20, 30), scale=1.0):
  """A metrics.jsonl of train (loss, d_loss, steps_per_second), test (fid, kid) records, a
  config change and a torn last line."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step in steps:
      f.write(
          json.dumps({
              "step": step, "split": "train", "loss": scale /
                                                      step, "d_loss": 0.5, "steps_per_second": 3.0
          }) + "\n")
      f.write(
          json.dumps({"step": step, "split": "test", "fid": 100.0 * scale / step, "kid": 0.1}) +
          "\n")
    f.write(json.dumps({"step": 20, "split": "config_change", "changes": {"lr": [1, 2]}}) + "\n")
    f.write('{"step": 40, "split": "tr')
  return str(workdir)


def lines_per_axis(fig):
  return {ax.get_title(): len(ax.get_lines()) for ax in fig.axes}


def test_records_skip_other_splits_and_unparseable_lines(tmp_path):
  records = plot.read_records(os.path.join(write_run(tmp_path / "a"), "metrics.jsonl"))
  assert len(records) == 6 and {r["split"] for r in records} == {"train", "test"}
  steps, values = plot.curves(records, "test")["fid"]
  assert steps == [10, 20, 30] and values == pytest.approx([10.0, 5.0, 100 / 30])


def test_write_curves_writes_a_subplot_per_metric(tmp_path):
  workdir = write_run(tmp_path / "run")
  figures = plot.split_figures(workdir)
  assert lines_per_axis(figures["train"]) == {"loss": 1, "d_loss": 1}  # no steps_per_second
  assert lines_per_axis(figures["eval"]) == {"fid": 1, "kid": 1}
  paths = plot.write_curves(workdir)
  assert sorted(os.path.basename(p) for p in paths) == ["eval.png", "train.png"]
  for path in paths:
    assert os.path.dirname(path) == os.path.join(workdir, "plots")
    with Image.open(path) as png:
      assert png.format == "PNG" and png.size[0] > 100
  assert sorted(os.listdir(os.path.join(workdir, "plots"))) == ["eval.png", "train.png"]


def test_write_curves_without_records_writes_nothing(tmp_path):
  assert plot.write_curves(str(tmp_path)) == []
  (tmp_path /
   "metrics.jsonl").write_text(json.dumps({"step": 0, "split": "train", "loss": 1.0}) + "\n")
  assert [os.path.basename(p) for p in plot.write_curves(str(tmp_path))] == ["train.png"]


def test_overlay_has_a_line_per_run_labelled_by_workdir(tmp_path):
  a = write_run(tmp_path / "dcgan")
  b = write_run(tmp_path / "wgan", steps=(10, 20), scale=2.0)
  fig = plot.overlay_figure([a, b], "test")
  assert lines_per_axis(fig) == {"fid": 2, "kid": 2}
  assert [line.get_label() for line in fig.axes[0].get_lines()] == ["dcgan", "wgan"]


def test_floors_and_stds_join_their_metric_and_equal_curves_share_a_panel(tmp_path):
  records = [{
      "step": s, "split": "test", "fid": 50.0 / s, "fid_floor": 2.0, "kid": 0.1, "kid_std": 0.01,
      "std_only_std": 1.0
  } for s in (10, 20)]
  records += [{"step": s, "split": "train", "loss": 3.0 / s, "neg_elbo": 3.0 / s, "kl": 1.0 / s}
              for s in (10, 20)]
  fig = plot.curves_figure({"run": plot.curves(records, "test")}, "eval")
  assert lines_per_axis(fig) == {"fid": 2, "kid": 1, "std_only_std": 1}
  fid, kid = fig.axes[:2]
  assert [line.get_linestyle() for line in fid.get_lines()] == ["-", "--"]
  assert list(fid.get_lines()[1].get_ydata()) == [2.0, 2.0]
  band = kid.collections[0].get_paths()[0].vertices[:, 1]
  assert min(band) == pytest.approx(0.09) and max(band) == pytest.approx(0.11)
  train = plot.curves_figure({"run": plot.curves(records, "train")}, "train")
  assert lines_per_axis(train) == {"loss = neg_elbo": 1, "kl": 1}


def test_overlay_labels_runs_as_asked(tmp_path):
  a, b = write_run(tmp_path / "00"), write_run(tmp_path / "01", scale=2.0)
  fig = plot.overlay_figure([a, b], "test", ["00: lr=0.1", "01: lr=0.2"])
  assert [line.get_label() for line in fig.axes[0].get_lines()] == ["00: lr=0.1", "01: lr=0.2"]


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "aigc_jax.plot", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_cli_overlays_runs_into_one_png(tmp_path):
  a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", scale=3.0)
  out = tmp_path / "cmp" / "compare.png"
  done = run_cli("--workdir", a, "--workdir", b, "--out", str(out), "--split", "train")
  assert done.returncode == 0, done.stderr
  assert out.exists() and done.stdout.strip() == f"wrote {out}"


@pytest.mark.parametrize("case, message", [
    ("no_out", "--workdir and --out are required"),
    ("missing_metrics", "metrics.jsonl"),
    ("bad_split", "flag --split=val: value should be one of <test|train>"),
    ("not_png", "--out must name a .png file"),
    ("two_runs_after_one_workdir", "name each run with a --workdir of its own"),
])
def test_cli_bad_input_is_one_error_line(tmp_path, case, message):
  good, out = write_run(tmp_path / "good"), str(tmp_path / "x.png")
  args = {
      "no_out": ["--workdir", good],
      "missing_metrics": ["--workdir", good, "--workdir",
                          str(tmp_path / "nothing"), "--out", out],
      "bad_split": ["--workdir", good, "--out", out, "--split", "val"],
      "not_png": ["--workdir", good, "--out", str(tmp_path)],
      "two_runs_after_one_workdir": ["--workdir", good, good, "--out", out],
  }[case]
  done = run_cli(*args)
  assert done.returncode == 2
  [line] = done.stderr.strip().splitlines()
  assert line.startswith("error: ") and message in line, line
  assert not (tmp_path / "x.png").exists()


def test_curve_drawer_returns_at_once_and_merges_requests(tmp_path, monkeypatch):
  started, release, calls = threading.Event(), threading.Event(), []

  def slow_write_curves(workdir):
    calls.append(workdir)
    started.set()
    assert release.wait(timeout=30)
    return []

  monkeypatch.setattr(plot, "write_curves", slow_write_curves)
  drawer = plot.CurveDrawer(str(tmp_path))
  drawer.close()  # nothing requested: returns, draws nothing
  assert calls == []
  drawer = plot.CurveDrawer(str(tmp_path))
  drawer.request()
  assert started.wait(timeout=30)  # drawing, blocked: request() did not wait for it
  drawer.request()
  drawer.request()  # both while the first drawing runs: one more drawing
  release.set()
  drawer.close()
  assert calls == [str(tmp_path)] * 2 and drawer.drawings == 2
  with pytest.raises(RuntimeError, match="after close"):
    drawer.request()


def test_metric_writer_draws_curves_of_every_record_by_close(tmp_path, monkeypatch):
  from aigc_jax import writers  # pylint: disable=g-import-not-at-top
  seen, real = [], plot.write_curves

  def spy(workdir):
    seen.append(len(plot.read_records(os.path.join(workdir, "metrics.jsonl"))))
    return real(workdir)

  monkeypatch.setattr(plot, "write_curves", spy)
  writer = writers.MetricWriter(str(tmp_path), tensorboard=False)
  for step in range(1, 6):
    writer.write(step, "train", {"loss": 1.0 / step})
    writer.write(step, "test", {"fid": 10.0 / step})
    writer.draw_curves()
  writer.close()
  assert seen and seen[-1] == 10  # the last drawing came after the last record
  assert sorted(os.listdir(tmp_path / "plots")) == ["eval.png", "train.png"]
  quiet = writers.MetricWriter(str(tmp_path / "other"), enabled=False)
  quiet.draw_curves()  # a process that writes no logs draws nothing
  quiet.close()
  assert not (tmp_path / "other").exists()
