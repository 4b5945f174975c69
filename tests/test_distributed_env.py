"""Multi-host start-up from the environment alone, and the device line every entry point logs."""

import logging
import os
import re
import subprocess
import sys

import jax
import pytest
from helpers import small_config

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import run_setup
from aigc_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
                     "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "OMPI_COMM_WORLD_SIZE",
                     "OMPI_COMM_WORLD_RANK", "OMPI_MCA_orte_hnp_uri", "TPU_PROCESS_ADDRESSES",
                     "TPU_WORKER_HOSTNAMES", "MEGASCALE_NUM_SLICES")


def slurm(tasks: int) -> dict:
  """What srun sets for task 0 of a step of `tasks` tasks."""
  return {
      "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[001-002]", "SLURM_NTASKS": str(tasks),
      "SLURM_PROCID": "0", "SLURM_LOCALID": "0"
  }


@pytest.fixture
def clean_env(monkeypatch):
  """No cluster variables from the machine that runs the tests."""
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)


@pytest.fixture
def calls(clean_env, monkeypatch):  # pylint: disable=unused-argument
  """jax.distributed.initialize records its calls instead of starting anything."""
  recorded = []

  def initialize(coordinator_address=None, num_processes=None, process_id=None):
    recorded.append((coordinator_address, num_processes, process_id))

  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", initialize)
  return recorded


def config(**overrides):
  return config_lib.get_config("vae_mlp", **overrides)


@pytest.mark.parametrize(
    "env, kind",
    [
        (slurm(2), "slurm"),
        (slurm(1), None),
        ({"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4"}, None),  # an sbatch script, not an srun step
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, "ompi"),
        ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1"}, "tpu"),
        ({"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"}, "tpu"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a lone TPU VM
        ({"MEGASCALE_NUM_SLICES": "2"}, "tpu"),
        ({}, None),
    ])
def test_cluster_environment(env, kind, clean_env, monkeypatch):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert backend.cluster_environment() == kind


@pytest.mark.parametrize("env, expected", [
    (slurm(2), [(None, None, None)]),
    (slurm(1), []),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, [(None, None, None)]),
    ({}, []),
    ({"JAX_COORDINATOR_ADDRESS": "host0:1234"}, [("host0:1234", None, None)]),
])
def test_initializes_only_for_a_job_of_several_processes(env, expected, calls, monkeypatch):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  run_setup.initialize_distributed(config())
  assert calls == expected


def test_explicit_values_win_over_the_cluster(calls, monkeypatch):
  for name, value in slurm(4).items():
    monkeypatch.setenv(name, value)
  run_setup.initialize_distributed(config(num_processes=2, process_id=1))
  run_setup.initialize_distributed(
      config(coordinator_address="host0:99", num_processes=2, process_id=0))
  assert calls == [(None, 2, 1), ("host0:99", 2, 0)]


def test_an_initialized_runtime_is_left_alone(calls, monkeypatch):
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
  run_setup.initialize_distributed(config(coordinator_address="host0:99"))
  assert calls == []


def test_a_cluster_jax_cannot_read_is_a_config_error(calls, monkeypatch):

  def initialize(*args, **kwargs):
    raise ValueError("coordinator_address should be defined.")

  monkeypatch.setattr(jax.distributed, "initialize", initialize)
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
  with pytest.raises(config_lib.ConfigError, match="this ompi job .* set coordinator_address"):
    run_setup.initialize_distributed(config())


def test_describe_devices_on_cpu():
  kind = jax.devices()[0].device_kind
  assert backend.describe_devices() == (f"backend cpu, {jax.local_device_count()} x {kind} "
                                        "(process 0 of 1)")


@pytest.mark.slow
def test_every_entry_point_logs_the_devices(idx_dir, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  with caplog.at_level(logging.INFO, logger="aigc_jax"):
    train.train_and_evaluate(
        small_config(idx_dir, num_train_steps=4, eval_every_steps=4, eval_iwae_samples=2,
                     eval_iwae_examples=4), workdir)
  assert any(backend.describe_devices() in message for message in caplog.messages)
  # Each CLI is a fresh process with JAX's default single CPU device.
  line = re.compile(rf"backend cpu, \d+ x {re.escape(jax.devices()[0].device_kind)} "
                    r"\(process 0 of 1\)")
  for command in ([
      "-m", "aigc_jax.sample", "--workdir", workdir, "--num", "2", "--out",
      str(tmp_path / "s.npz")
  ], ["-m", "aigc_jax.evaluate", "--workdir", workdir]):
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert line.search(done.stderr), done.stderr[-2000:]
