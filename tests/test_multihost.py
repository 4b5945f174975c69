"""Data-parallel training end to end: 2 processes x 2 devices == 1 process x 4 devices, and a
checkpoint written on 4 devices continues on 1."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import pytest
from helpers import STEADY_ADAM
from helpers import arrays
from helpers import read_jsonl
from helpers import small_config

from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from conftest import free_port
from conftest import xla_level_flag

pytestmark = pytest.mark.slow
HERE = os.path.dirname(os.path.abspath(__file__))


def trained(workdir):
  return workdir_lib.load_trained(workdir, "latest").state


def start_workers(data_dir, workdir, mode, overrides=None):
  port, env = free_port(), {**os.environ, "XLA_FLAGS": xla_level_flag()}
  extra = [json.dumps(overrides)] if overrides else []
  return [
      subprocess.Popen([
          sys.executable,
          os.path.join(HERE, "multihost_worker.py"), data_dir, workdir, mode,
          str(port),
          str(i), *extra
      ], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)
  ]


def wait_for_train_record(workdir, timeout=120):
  path, deadline = os.path.join(workdir, "metrics.jsonl"), time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and any(r["split"] == "train" for r in read_jsonl(path)):
      return
    time.sleep(0.1)
  raise AssertionError(f"no train record in {path} after {timeout} s")


def test_two_streaming_processes_read_their_halves_and_equal_one_process(idx_dir, tmp_path):
  shared = str(tmp_path / "two_processes")
  workers = start_workers(idx_dir, shared, "shard_map", {"max_device_bytes": 1})
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
  # 4 steps of 32 rows per call, split over 2 x 2 devices: each process reads its 64 rows.
  assert "process 0 streams rows [0, 64) of each 128-row chunk" in outputs[0], outputs[0][-2000:]
  assert "process 1 streams rows [64, 128) of each 128-row chunk" in outputs[1], outputs[1][-2000:]
  for i, output in enumerate(outputs):  # each chunk placed by halves, never the split of 256 rows
    assert f"process {i} loaded 64 and holds 64 of 128 train rows" in output
    assert "of 256 train rows" not in output
  on_device = str(tmp_path / "one_process_on_device")
  train.train_and_evaluate(small_config(idx_dir, parallel="shard_map", **STEADY_ADAM), on_device)
  chex.assert_trees_all_close(arrays(trained(shared)), arrays(trained(on_device)), rtol=1e-5,
                              atol=1e-6)


def test_sigterm_to_one_process_stops_both_at_one_saved_step(idx_dir, tmp_path):
  shared = str(tmp_path / "two_processes")
  long_run = {"num_train_steps": 240, "eval_every_steps": 120}
  workers = start_workers(idx_dir, shared, "shard_map", long_run)
  wait_for_train_record(shared)
  workers[1].send_signal(signal.SIGTERM)  # process 0 is not signalled: it must stop with it
  outputs = [w.communicate(timeout=120)[0] for w in workers]
  assert [w.returncode for w in workers] == [128 + signal.SIGTERM] * 2, outputs[0][-2000:]
  stopped = workdir_lib.load_trained(shared, "latest").step
  assert 0 < stopped < 240 and f"at step {stopped}" in outputs[0]

  workers = start_workers(idx_dir, shared, "shard_map", long_run)  # resume to the end
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:]
  reference = str(tmp_path / "one_process")
  train.train_and_evaluate(small_config(idx_dir, parallel="shard_map", **long_run, **STEADY_ADAM),
                           reference)
  chex.assert_trees_all_close(arrays(trained(shared)), arrays(trained(reference)), rtol=1e-4,
                              atol=1e-5)


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_two_processes_equal_one_process_with_four_devices(idx_dir, tmp_path, mode):
  shared = str(tmp_path / "two_processes")
  workers = start_workers(idx_dir, shared, mode)
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
  assert "process 1 of 2: 4 devices" in outputs[1], outputs[1][-2000:]
  rows = 256 * (28 * 28 + 4)  # each process reads and holds half of the train split's 256 rows
  for i, output in enumerate(outputs):
    assert f"process {i} loaded 128 and holds 128 of 256 train rows, {rows // 2} bytes" in output, (
        output[-2000:])
  # The test split's 64 rows in whole batches of 50: the first batch on process 0, the second on 1.
  assert "process 0 holds test rows [0, 50) of 64" in outputs[0], outputs[0][-2000:]
  assert "process 1 holds test rows [50, 64) of 64" in outputs[1], outputs[1][-2000:]

  reference = str(tmp_path / "one_process")
  train.train_and_evaluate(small_config(idx_dir, parallel=mode, **STEADY_ADAM), reference)
  assert jax.device_count() == 4
  chex.assert_trees_all_close(arrays(trained(shared)), arrays(trained(reference)), rtol=1e-5,
                              atol=1e-6)
  one_device = str(tmp_path / "one_device")
  train.train_and_evaluate(small_config(idx_dir, parallel="none", **STEADY_ADAM), one_device)
  chex.assert_trees_all_close(arrays(trained(shared)), arrays(trained(one_device)), rtol=1e-5,
                              atol=1e-6)

  # Only process 0 wrote the logs: every record once, exactly as the one-process run has them.
  records = read_jsonl(os.path.join(shared, "metrics.jsonl"))
  steps = [(r["step"], r["split"]) for r in records]
  reference_records = read_jsonl(os.path.join(reference, "metrics.jsonl"))
  assert steps == [(r["step"], r["split"]) for r in reference_records]
  assert len(set(steps)) == len(steps)
  # The test metrics, each process evaluating its rows, are those of one process evaluating all.
  for r, ref in zip(records, reference_records):
    if r["split"] == "test":
      assert r.keys() == ref.keys()
      for key in ("neg_elbo", "recon", "kl"):
        assert r[key] == pytest.approx(ref[key], rel=1e-5), (key, r, ref)


def test_checkpoint_from_four_devices_continues_on_one(idx_dir, tmp_path):
  unbroken = str(tmp_path / "unbroken")
  train.train_and_evaluate(small_config(idx_dir, **STEADY_ADAM), unbroken)  # 16 steps, 1 device

  resumed = str(tmp_path / "resumed")
  train.train_and_evaluate(
      small_config(idx_dir, parallel="shard_map", num_train_steps=8, **STEADY_ADAM), resumed)
  assert workdir_lib.load_trained(resumed, "latest").step == 8
  train.train_and_evaluate(small_config(idx_dir, parallel="none", **STEADY_ADAM), resumed)
  state = trained(resumed)
  assert int(state.step) == 16
  chex.assert_trees_all_close(arrays(state), arrays(trained(unbroken)), rtol=1e-5, atol=1e-6)
