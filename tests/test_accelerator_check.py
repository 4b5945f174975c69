"""benchmarks/accelerator_check.sh end to end on CPU with --tiny, so that it cannot rot."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_tiny_accelerator_check_writes_every_part(cache_dir, tmp_path):
  out, cache = str(tmp_path / "check"), str(tmp_path / "cache")
  shutil.copytree(cache_dir, cache)  # its own copy: evaluation caches floors beside the classifier
  env = {**os.environ, "AIGC_JAX_CACHE": cache, "PYTHON": sys.executable}
  done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), out,
                         "--tiny"], env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(out, "accelerator_check.json")) as f:
    result = json.load(f)
  assert result["devices"].startswith("backend cpu, ")
  tests = result["accelerator_tests"]  # on a CPU every accelerator test skips, none fails
  assert tests["tests"] == tests["skipped"] > 0 and tests["failures"] == tests["errors"] == 0
  runs = [(r["model"], r["batch"], r["dtype"]) for r in result["benchmarks"]]
  assert runs == [(m, 8, d) for m in ("vae_mlp", "dcgan") for d in ("float32", "bfloat16")]
  assert all(r["step_ms"] > 0 and r["backend"] == "cpu" for r in result["benchmarks"])
  if importlib.util.find_spec("torch"):  # PyTorch beside the float32 rows only
    assert [("torch_step_ms" in r, "torch_compile_step_ms" in r)
            for r in result["benchmarks"]] == [(True, True), (False, False), (True, False),
                                               (False, False)]
  dcgan = result["dcgan"]
  assert dcgan["step"] == 20 and dcgan["num_samples"] == 200 and dcgan["train_wall_s"] > 0
  assert np.isfinite(dcgan["fid"]) and 0 <= dcgan["precision"] <= 1 and 0 <= dcgan["recall"] <= 1
  with open(os.path.join(out, "accelerator_check.md")) as f:
    table = f.read()
  assert table.count("| vae_mlp | 8 |") == 2 and "DCGAN (" in table


@pytest.mark.skipif(os.path.isdir(os.path.join(ROOT, "wheels")),
                    reason="wheels/ exists here: the script installs from it instead")
def test_missing_dependencies_without_wheels_is_one_clear_error(tmp_path):
  fake = tmp_path / "python"  # a Python that lacks ml_collections
  fake.write_text("#!/bin/sh\nexit 1\n")
  fake.chmod(0o755)
  done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"),
                         str(tmp_path / "out")], env={**os.environ, "PYTHON": str(fake)},
                        capture_output=True, text=True, cwd=str(tmp_path))
  assert done.returncode == 2
  assert done.stderr.startswith("error: ") and "make wheels" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1
