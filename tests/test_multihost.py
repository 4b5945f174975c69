"""Data-parallel training end to end: 2 processes x 2 devices == 1 process x 4 devices, and a
checkpoint written on 4 devices continues on 1."""

import os
import subprocess
import sys

import chex
import jax
import pytest

from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from conftest import free_port
from test_train import STEADY_ADAM, arrays, idx_dir, read_jsonl, small_config  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
HERE = os.path.dirname(os.path.abspath(__file__))


def trained(workdir):
  return workdir_lib.load_trained(workdir, "latest").state


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_two_processes_equal_one_process_with_four_devices(idx_dir, tmp_path, mode):  # noqa: F811
  shared = str(tmp_path / "two_processes")
  port = free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_worker.py"), idx_dir,
                               shared, mode, str(port), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
  assert "process 1 of 2: 4 devices" in outputs[1], outputs[1][-2000:]

  reference = str(tmp_path / "one_process")
  train.train_and_evaluate(small_config(idx_dir, parallel=mode, **STEADY_ADAM), reference)
  assert jax.device_count() == 4
  chex.assert_trees_all_close(arrays(trained(shared)), arrays(trained(reference)), rtol=1e-5,
                              atol=1e-6)

  # Only process 0 wrote the logs: every record once, exactly as the one-process run has them.
  records = read_jsonl(os.path.join(shared, "metrics.jsonl"))
  steps = [(r["step"], r["split"]) for r in records]
  reference_records = read_jsonl(os.path.join(reference, "metrics.jsonl"))
  assert steps == [(r["step"], r["split"]) for r in reference_records]
  assert len(set(steps)) == len(steps)


def test_checkpoint_from_four_devices_continues_on_one(idx_dir, tmp_path):  # noqa: F811
  unbroken = str(tmp_path / "unbroken")
  train.train_and_evaluate(small_config(idx_dir, **STEADY_ADAM), unbroken)  # 16 steps, 1 device

  resumed = str(tmp_path / "resumed")
  train.train_and_evaluate(small_config(idx_dir, parallel="shard_map", num_train_steps=8,
                                        **STEADY_ADAM), resumed)
  assert workdir_lib.load_trained(resumed, "latest").step == 8
  train.train_and_evaluate(small_config(idx_dir, parallel="none", **STEADY_ADAM), resumed)
  state = trained(resumed)
  assert int(state.step) == 16
  chex.assert_trees_all_close(arrays(state), arrays(trained(unbroken)), rtol=1e-5, atol=1e-6)
