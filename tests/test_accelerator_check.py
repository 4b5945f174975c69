"""benchmarks/accelerator_check.sh end to end on CPU with --tiny under a GPU's platform defaults
(100 steps per call), so that it cannot rot; its rows under a TPU's; and the runner that records
a failed row, goes on, and leaves rows out when the budget is spent."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from aigc_jax.bench import check
from aigc_jax.bench import presets
from aigc_jax.bench import timing
from aigc_jax.bench.presets import BenchmarkError
from conftest import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BENCH = [
    "dcgan b8 highest", "dcgan b8 tf32", "vae_mlp b8 highest", "vae_mlp b8 tf32",
    "vae_mlp b1024 bfloat16", "vae_mlp b1024 highest", "dcgan b8 bfloat16", "vae_mlp b8 bfloat16"
]


def load_script():
  """benchmarks/accelerator_check.py as a module."""
  spec = importlib.util.spec_from_file_location(
      "accelerator_check", os.path.join(ROOT, "benchmarks", "accelerator_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read(out):
  with open(os.path.join(out, "accelerator_check.json")) as f:
    result = json.load(f)
  with open(os.path.join(out, "accelerator_check.md")) as f:
    return result, f.read()


@needs_fashion_mnist
@pytest.mark.slow
def test_tiny_check_under_gpu_defaults_runs_every_row(cache_dir, tmp_path):
  out, cache = str(tmp_path / "check"), str(tmp_path / "cache")
  shutil.copytree(cache_dir, cache)  # its own copy: evaluation caches floors beside the classifier
  env = {
      **os.environ, "AIGC_JAX_CACHE": cache, "PYTHON": sys.executable,
      "AIGC_JAX_PLATFORM_DEFAULTS": "gpu"
  }
  done = subprocess.run([
      "bash",
      os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), out, "--tiny", "--budget_s", "3000"
  ], env=env, capture_output=True, text=True, timeout=1200)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  result, table = read(out)
  assert result["devices"].startswith("backend cpu, ") and result["platform"] == "gpu (emulated)"
  rows = {r["row"]: r for r in result["rows"]}
  assert list(rows) == TINY_BENCH[:6] + ["dcgan training", "accelerator tests"] + TINY_BENCH[6:]
  assert {r["status"] for r in rows.values()} == {"ok"}
  bench = [rows[name] for name in TINY_BENCH]
  assert all(r["step_ms"] > 0 for r in bench)  # batch 1024 in a GPU's calls, batch 8 in 2 steps
  assert [r["steps_per_call"] for r in bench] == [2] * 4 + [100] * 2 + [2] * 2
  assert [r["peak_kind"] for r in bench] == ["float32/highest", "float32/default"] * 2 + [
      "bfloat16", "float32/highest", "bfloat16", "bfloat16"
  ]
  if importlib.util.find_spec("torch"):  # PyTorch beside the float32 rows, TF32 as JAX's
    assert [("torch_step_ms" in r, "torch_compile_step_ms" in r) for r in bench] == [(True, False),
                                                                                     (True, False),
                                                                                     (True, False),
                                                                                     (True, False),
                                                                                     (False, False),
                                                                                     (True, False),
                                                                                     (False, False),
                                                                                     (False, False)]
    assert [r.get("torch_tf32") for r in bench[:4]] == [False, True, False, True]
  tests = rows["accelerator tests"]  # on a CPU every accelerator test skips, none fails
  assert tests["tests"] == tests["skipped"] > 0 and tests["failures"] == tests["errors"] == 0
  train = rows["dcgan training"]
  assert train["steps"] == 10 and train["num_samples"] == 200
  assert 0 < train["train_steady_s"] <= train["train_s"] < train["wall_s"]
  assert np.isfinite(train["fid"]) and 0 <= train["precision"] <= 1 and 0 <= train["recall"] <= 1
  assert table.count("| vae_mlp b1024 ") == 2 and "DCGAN training (" in table
  assert "Failed rows" not in table and "Skipped" not in table


@pytest.mark.slow
def test_batch_1024_rows_under_tpu_defaults(monkeypatch, tmp_path):
  monkeypatch.setenv("AIGC_JAX_PLATFORM_DEFAULTS", "tpu")
  part = load_script().TINY  # the bfloat16 row: the float32 one runs the GPU check's program
  spec = next(spec for group, spec in check.plan(tiny=True) if group == 3)
  rows = [check.Row(spec.label, 3, "bench", lambda: check.bench(spec, part, False))]
  records = check.run_rows(
      rows, 600, lambda r: check.write_files(str(
          tmp_path), {"devices": "cpu", "platform": "tpu", "budget_s": 600}, r))
  got = [(r["status"], r["batch"], r["steps_per_call"]) for r in records]
  assert got == [("ok", 1024, 100)]
  result, _ = read(str(tmp_path))  # 102,400 images: more than the 60,000 the set used to hold
  assert [r["dtype"] for r in result["rows"]] == ["bfloat16"]


def test_a_failing_row_is_recorded_and_the_next_rows_run(tmp_path):
  config = presets.bench_config("vae_mlp", 4, steps_per_call=20)
  header = {"devices": "test", "platform": "gpu", "budget_s": 100}
  snapshots = []

  def write(records):
    check.write_files(str(tmp_path), header, records)
    snapshots.append(read(str(tmp_path))[0]["rows"])

  rows = [
      check.Row(
          "too few images",
          1,
          "bench",  # a set smaller than one call, as before
          lambda: timing.benchmark("vae_mlp", config, num_images=64)),
      check.Row("next", 2, "bench", lambda: {"step_ms": 1.5, "steps_per_call": 20})
  ]
  records = check.run_rows(rows, 100, write)
  assert [r["status"] for r in records] == ["failed", "ok"]
  assert records[0]["error"].startswith("BenchmarkError: --images 64 is less than one call's")
  assert [[r["status"] for r in s] for s in snapshots] == [["pending", "pending"],
                                                           ["running", "pending"],
                                                           ["failed", "pending"],
                                                           ["failed", "running"], ["failed", "ok"],
                                                           ["failed", "ok"]]
  result, table = read(str(tmp_path))
  assert result["rows"] == records
  assert "- too few images: BenchmarkError: --images 64" in table
  assert "| next | 20 | 1.50 |" in table
  with pytest.raises(BenchmarkError):
    rows[0].run()


def test_the_budget_leaves_later_rows_out(tmp_path):
  now, ran = [0.0], []

  def row(name, seconds):

    def run():
      ran.append(name)
      now[0] += seconds
      return {}

    return check.Row(name, 1, "bench", run)

  records = check.run_rows([row("a", 30), row("b", 40), row("c", 5)], 60, lambda r: None,
                           clock=lambda: now[0])
  assert ran == ["a", "b"]  # b starts at 30 s < 60 s; c would start at 70 s
  assert [r["status"] for r in records] == ["ok", "ok", "skipped"]
  table = check.markdown({"devices": "x", "platform": "gpu", "budget_s": 60}, records)
  assert "Skipped by the budget: c" in table


FAKE_WORKER = """
import json, os, subprocess, sys, time
out = sys.argv[1]
rows = [{"row": n, "kind": "bench", "group": 1, "status": s} for n, s in
        [("a", "ok"), ("b", "running"), ("c", "pending")]]
with open(os.path.join(out, "accelerator_check.json"), "w") as f:
  json.dump({"devices": "x", "platform": "gpu", "budget_s": 2, "rows": rows}, f)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.path.join(out, "child"), "w") as f:
  f.write(str(child.pid))
END
"""


def assert_gone(pid):
  with pytest.raises(ProcessLookupError):
    for _ in range(100):
      os.kill(pid, 0)
      time.sleep(0.05)


def test_the_budget_stops_a_running_row_and_everything_it_started(tmp_path):
  start = time.perf_counter()
  worker = FAKE_WORKER.replace("END", "time.sleep(60)")
  status = check.supervise([sys.executable, "-c", worker, str(tmp_path)], str(tmp_path), 2)
  assert status == 0 and time.perf_counter() - start < 30  # not the worker's 60 s
  result, table = read(str(tmp_path))
  assert [r["status"] for r in result["rows"]] == ["ok", "cut", "skipped"]
  assert result["rows"][1]["reason"] == "the budget of 2 s ran out"
  assert "Cut short: b (the budget of 2 s ran out)" in table
  assert "Skipped by the budget: c" in table
  assert_gone(int((tmp_path / "child").read_text()))  # the row's subprocess went with the worker


def test_a_worker_that_dies_mid_row_is_a_failed_check(tmp_path):
  worker = FAKE_WORKER.replace("END", "sys.exit(3)")
  assert check.supervise([sys.executable, "-c", worker, str(tmp_path)], str(tmp_path), 30) == 1
  result, _ = read(str(tmp_path))
  assert [r["status"] for r in result["rows"]] == ["ok", "cut", "skipped"]
  assert result["rows"][1]["reason"] == "the check's process ended with status 3"
  assert_gone(int((tmp_path / "child").read_text()))


def test_training_time_leaves_out_the_first_calls_compilation(tmp_path):
  lines = [{"step": 0, "split": "config"}, {"step": 5, "split": "train", "steps_per_second": 1.0},
           {"step": 10, "split": "train",
            "steps_per_second": 10.0}, {"step": 20, "split": "train", "steps_per_second": 10.0},
           {"step": 20, "split": "test", "fid": 3.0}]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("".join(json.dumps(line) + "\n" for line in lines))
  got = load_script().train_time(str(tmp_path))  # chunks of 5, 0.5 and 1 s: then 0.1 s a step
  assert got == {
      "train_s": 6.5, "train_compile_s": 4.5, "train_steady_s": 2.0, "steps": 20,
      "steps_per_s": 10.0
  }


@pytest.mark.skipif(os.path.isdir(os.path.join(ROOT, "wheels")),
                    reason="wheels/ exists here: the script installs from it instead")
def test_missing_dependencies_without_wheels_is_one_clear_error(tmp_path):
  fake = tmp_path / "python"  # a Python that lacks ml_collections
  fake.write_text("#!/bin/sh\nexit 1\n")
  fake.chmod(0o755)
  done = subprocess.run(
      ["bash",
       os.path.join(ROOT, "benchmarks", "accelerator_check.sh"),
       str(tmp_path / "out")], env={**os.environ, "PYTHON": str(fake)}, capture_output=True,
      text=True, cwd=str(tmp_path))
  assert done.returncode == 2
  assert done.stderr.startswith("error: ") and "make wheels" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1


def test_the_import_probe_names_every_third_party_module_the_package_loads():
  with open(os.path.join(ROOT, "benchmarks", "accelerator_check.sh")) as f:
    script = f.read()
  probed = set(script.split('MODULES="', 1)[1].split('"', 1)[0].replace("\\\n", " ").split())
  imported = set()
  for folder, _, files in os.walk(os.path.join(ROOT, "aigc_jax")):
    if os.path.basename(folder) == "torch_reference":  # optional: the PyTorch columns
      continue
    for name in (n for n in files if n.endswith(".py")):
      with open(os.path.join(folder, name)) as f:
        for line in f:
          words = line.split()
          if len(words) > 1 and words[0] in ("import", "from"):
            imported.add(words[1].split(".")[0])
  third_party = {
      m for m in imported - set(sys.stdlib_module_names)
      if m not in ("aigc_jax", "torch", "__future__")
  }
  assert third_party and third_party <= {m.split(".")[0] for m in probed}
