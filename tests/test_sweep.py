"""Sweeps: members equal their runs alone, halving keeps the best, resume, refusals, export."""

import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from helpers import STEADY_ADAM
from helpers import arrays
from helpers import read_jsonl
from helpers import small_config

from aigc_jax import config as config_lib
from aigc_jax import parallel
from aigc_jax import sweep
from aigc_jax import sweep_spec
from aigc_jax import sweep_train
from aigc_jax import train
from aigc_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def restore(workdir):
  return workdir_lib.load_trained(workdir, "latest")


def test_values_that_change_the_state_shape_are_refused(idx_dir, tmp_path):
  with pytest.raises(config_lib.ConfigError, match="differs in shape"):
    sweep_train.run_sweep(spec_of(idx_dir, ["ema_decay=0,0.9"]), str(tmp_path / "sweep"))


def spec_of(data_dir, varies, halve_every=0, **overrides):
  config = small_config(data_dir, **overrides)
  return sweep_spec.make_spec(config, varies, halve_every=halve_every)


@pytest.mark.slow
@pytest.mark.parametrize("member_map", ["vmap", "unroll"])
def test_members_train_like_their_configs_alone(idx_dir, tmp_path, member_map):
  spec = spec_of(idx_dir, ["learning_rate=1e-3,3e-3", "seed=0,1"])
  sweep_train.run_sweep(spec, str(tmp_path / "sweep"), member_map)
  alone = str(tmp_path / "alone")
  train.train_and_evaluate(small_config(idx_dir, learning_rate=3e-3, seed=1), alone)
  member = restore(sweep_spec.member_dir(str(tmp_path / "sweep"), 1))
  chex.assert_trees_all_close(arrays(member.state), arrays(restore(alone).state), rtol=1e-5,
                              atol=1e-6)
  member_records = read_jsonl(
      os.path.join(sweep_spec.member_dir(str(tmp_path / "sweep"), 1), "metrics.jsonl"))
  alone_records = read_jsonl(os.path.join(alone, "metrics.jsonl"))
  test = lambda rs: [r["neg_elbo"] for r in rs if r["split"] == "test"]  # noqa: E731
  np.testing.assert_allclose(test(member_records), test(alone_records), rtol=1e-5)
  top = [r for r in read_jsonl(str(tmp_path / "sweep" / "metrics.jsonl")) if r["member"] == 1]
  assert [r["step"] for r in top] == [r["step"] for r in member_records]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_a_sweep_across_devices_matches_one_device(idx_dir, tmp_path, mode):
  varies = ["learning_rate=1e-3,3e-3"]
  sweep_train.run_sweep(spec_of(idx_dir, varies, num_train_steps=8, **STEADY_ADAM),
                        str(tmp_path / "one"))
  sweep_train.run_sweep(spec_of(idx_dir, varies, num_train_steps=8, parallel=mode, **STEADY_ADAM),
                        str(tmp_path / "many"))
  assert jax.device_count() == 4
  for m in range(2):
    one = restore(sweep_spec.member_dir(str(tmp_path / "one"), m)).state
    many = restore(sweep_spec.member_dir(str(tmp_path / "many"), m)).state
    chex.assert_trees_all_close(arrays(one), arrays(many), rtol=1e-4, atol=1e-5)


def test_members_go_to_the_most_devices_that_divide_them():
  step = lambda state, batch: (state, {})  # noqa: E731

  def sizes(loop):
    meshes = map(loop.place.member_mesh, [1, 2, 3, 4, 5, 6, 8])
    return [None if mesh is None else mesh.size for mesh in meshes]

  loop = parallel.make_train_loop(step, batch_size=8, members="vmap", member_devices=0)
  assert jax.local_device_count() == 4 and sizes(loop) == [None, 2, 3, 4, None, 3, 4]
  two = parallel.make_train_loop(step, batch_size=8, members="vmap", member_devices=2)
  assert sizes(two) == [None, 2, None, 2, None, 2, 2]
  for one in (parallel.make_train_loop(step, batch_size=8, members="vmap", member_devices=1),
              parallel.make_train_loop(step, batch_size=8, members="unroll", member_devices=0),
              parallel.make_train_loop(step, batch_size=8, members="vmap", mode="shard_map")):
    assert sizes(one) == [None] * 7


@pytest.mark.slow
def test_members_sharded_over_devices_train_like_on_one(idx_dir, tmp_path):
  spec = spec_of(idx_dir, ["learning_rate=1e-4,3e-3,1e-2,3e-4"], halve_every=1)
  sweep_train.run_sweep(spec, str(tmp_path / "one"), "vmap", member_devices=1)
  sweep_train.run_sweep(spec, str(tmp_path / "many"), "vmap")
  for m in range(4):
    one = restore(sweep_spec.member_dir(str(tmp_path / "one"), m)).state
    many = restore(sweep_spec.member_dir(str(tmp_path / "many"), m)).state
    chex.assert_trees_all_close(arrays(one), arrays(many), rtol=1e-5, atol=1e-6)
  fresh = sweep_train.setup(spec, str(tmp_path / "fresh"), "vmap")
  placed = sweep_train.LoopState(fresh, *sweep_train.restore_or_init(fresh))
  fresh.run.checkpoints.close()
  assert len(placed.placed.state.step.sharding.device_set) == 4
  assert len(placed.data.images.sharding.device_set) == 4


@pytest.mark.slow
def test_halving_keeps_the_best_by_the_family_metric(idx_dir, tmp_path):
  workdir = str(tmp_path / "sweep")
  spec = spec_of(idx_dir, ["learning_rate=1e-4,3e-3,1e-2,3e-4"], halve_every=1)
  table = sweep_train.run_sweep(spec, workdir)
  saved = json.load(open(os.path.join(workdir, "sweep.json")))
  evals = [
      r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
      if r["split"] == "test" and r["step"] == 8
  ]
  ranked = [r["member"] for r in sorted(evals, key=lambda r: r["neg_elbo"])]
  assert saved["stops"] == [{"step": 8, "members": sorted(ranked[2:]), "reason": "halved"}]
  last = {
      r["member"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["step"] == 16
  }
  assert last == set(ranked[:2])
  for m in range(4):  # every member ends as a run directory
    assert workdir_lib.has_checkpoints(sweep_spec.member_dir(workdir, m))
  assert "stopped at 8 (halved)" in table and "finished" in table


@pytest.mark.slow
def test_a_diverged_member_stops_and_the_others_go_on(idx_dir, tmp_path):
  workdir = str(tmp_path / "sweep")
  table = sweep_train.run_sweep(spec_of(idx_dir, ["learning_rate=1e-3,1e9"]), workdir)
  saved = json.load(open(os.path.join(workdir, "sweep.json")))
  assert [s["members"] for s in saved["stops"]] == [[1]] and saved["stops"][0]["reason"] == \
      "diverged"
  assert not workdir_lib.has_checkpoints(sweep_spec.member_dir(workdir, 1))  # no NaN state kept
  assert restore(sweep_spec.member_dir(workdir, 0)).step == 16
  assert "best: member 00" in table
  with pytest.raises(train.TrainingError, match="every member of the sweep diverged"):
    sweep_train.run_sweep(spec_of(idx_dir, ["learning_rate=1e9,1e10"]), str(tmp_path / "all"))


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_exactly(idx_dir, tmp_path):
  spec = spec_of(idx_dir, ["learning_rate=1e-4,3e-3,1e-2,3e-4"], halve_every=1)
  whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
  sweep_train.run_sweep(spec, whole)
  sweep_train.run_sweep(spec, broken)
  shutil.rmtree(os.path.join(broken, "checkpoints", "16"))  # as if killed before step 16's save
  halved = json.load(open(os.path.join(broken, "sweep.json")))["stops"][0]["members"]
  finished = [m for m in range(4) if m not in halved]
  for m in finished:
    shutil.rmtree(os.path.join(sweep_spec.member_dir(broken, m), "checkpoints"))
  sweep_train.run_sweep(spec, broken)

  def strip(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]

  assert strip(read_jsonl(os.path.join(broken, "metrics.jsonl"))) == strip(
      read_jsonl(os.path.join(whole, "metrics.jsonl")))
  for m in range(4):
    a = restore(sweep_spec.member_dir(whole, m)).state
    b = restore(sweep_spec.member_dir(broken, m)).state
    chex.assert_trees_all_equal(arrays(a), arrays(b))


@pytest.mark.slow
def test_an_exported_member_evaluates_like_a_normal_run(idx_dir, tmp_path):
  workdir = str(tmp_path / "sweep")
  sweep_train.run_sweep(spec_of(idx_dir, ["beta=1,0.5", "ema_decay=0.9,0.99"]), workdir)
  out = str(tmp_path / "exported")
  assert sweep.main(["--workdir", workdir, "--export", "1", "--to", out]) == 0
  alone = str(tmp_path / "alone")
  train.train_and_evaluate(small_config(idx_dir, beta=0.5, ema_decay=0.99), alone)
  got, want = restore(out), restore(alone)
  assert (got.config.beta, got.config.ema_decay, got.step) == (0.5, 0.99, want.step)
  test = workdir_lib.load_test_data(got.config)
  a = got.trainable.full_evaluate(got.state, test)
  b = want.trainable.full_evaluate(want.state, test)
  assert a.keys() == b.keys()
  np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-5)


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "aigc_jax.sweep", *args], capture_output=True,
                        text=True, cwd=ROOT, check=False)


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
  experiment = os.path.join(ROOT, "experiments", "vae_mlp_fashion_mnist.py")
  cases = [
      ([experiment, "--workdir",
        str(tmp_path / "a"), "--vary", "hidden_dim=16,32"], "int key sets shapes"),
      (["--workdir", str(tmp_path / "none")], "holds no sweep to resume"),
      (["--workdir",
        str(tmp_path / "none"), "--export", "0", "--to",
        str(tmp_path / "x")], "holds no sweep"),
      (["nothing.py", "--workdir",
        str(tmp_path / "b"), "--vary", "beta=1,2"], "not an experiment file"),
  ]
  for args, message in cases:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert "Traceback" not in result.stderr
