"""One process of the two-process test in test_multihost.py (not a test module itself).

python tests/multihost_worker.py IDX_DIR WORKDIR MODE PORT PROCESS_ID [CONFIG_JSON]

A stop signal exits with the training loop's code (128 + the signal) after the saved checkpoint.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)  # 2 processes x 2 devices = the 4 of the reference

from helpers import STEADY_ADAM  # noqa: E402  (tests/ is this script's directory)
from helpers import small_config  # noqa: E402  (tests/ is this script's directory)

from aigc_jax import placement  # noqa: E402
from aigc_jax import run_setup  # noqa: E402
from aigc_jax import signals  # noqa: E402
from aigc_jax import streaming  # noqa: E402
from aigc_jax import train  # noqa: E402


def reporting_placement(put_data):
  """`Placement.put_data` that prints how many train rows this process loaded and how many rows
  and bytes its devices hold."""

  def put(place, tree, members=0, **rows):
    placed = put_data(place, tree, members, **rows)
    shards = placed.images.addressable_shards + placed.labels.addressable_shards
    held = sum(s.data.shape[-4] for s in placed.images.addressable_shards)
    print(
        f"process {jax.process_index()} loaded {len(tree.labels)} and holds {held} of "
        f"{rows.get('num_examples') or len(tree.labels)} train rows, "
        f"{sum(s.data.nbytes for s in shards)} bytes", flush=True)
    return placed

  return put


def reporting_load_test(load_test):
  """`run_setup.load_test` that prints which rows of the test split this process holds."""

  def load(config):
    test = load_test(config)
    print(
        f"process {jax.process_index()} holds test rows [{test.first_row}, "
        f"{test.first_row + len(test.labels)}) of {test.size}", flush=True)
    return test

  return load


def reporting_stream(chunk):
  """`ChunkStream.chunk` that prints, once, which rows of each chunk this process reads."""

  def read(stream, step, num_steps):
    if step == 0:
      rows = stream.local_rows
      print(
          f"process {jax.process_index()} streams rows [{rows[0]}, {rows[1]}) of each "
          f"{stream.rows_per_call}-row chunk", flush=True)
    return chunk(stream, step, num_steps)

  return read


def main(idx_dir, workdir, mode, port, process_id, overrides="{}"):
  placement.Placement.put_data = reporting_placement(placement.Placement.put_data)
  run_setup.load_test = reporting_load_test(run_setup.load_test)
  streaming.ChunkStream.chunk = reporting_stream(streaming.ChunkStream.chunk)
  config = small_config(idx_dir, parallel=mode, coordinator_address=f"127.0.0.1:{port}",
                        num_processes=2, process_id=int(process_id), **STEADY_ADAM,
                        **json.loads(overrides))
  try:
    train.train_and_evaluate(config, workdir)
  except signals.Stopped as e:
    print(f"process {jax.process_index()}: {e}", flush=True)
    sys.exit(e.exit_code)
  print(f"process {jax.process_index()} of {jax.process_count()}: {jax.device_count()} devices, "
        "done")


if __name__ == "__main__":
  main(*sys.argv[1:])
