"""The train split streamed a chunk at a time, in the on-device path's order."""

import json
import logging
import os
import subprocess
import sys
import time

import chex
import numpy as np
import pytest
from helpers import arrays
from helpers import small_config
from PIL import Image

from aigc_jax import config as config_lib
from aigc_jax import data
from aigc_jax import image_folder
from aigc_jax import streaming
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.bench import cli

N, R, K, SPE = 50, 4, 3, 12  # rows, rows per step, steps per call, steps per epoch (drops 2)


@pytest.fixture(name="source")
def fixture_source():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (N, 2, 2, 1), dtype=np.uint8)
  return streaming.ArraySource(images, np.arange(N, dtype=np.int32))


def expected_rows(seed, epoch, first_step, steps):
  perm = np.asarray(data.epoch_permutation(seed, epoch, N))
  return perm[first_step * R:(first_step + steps) * R]


def make(source, local_rows=(0, K * R)):
  return streaming.ChunkStream(source, seed=3, steps_per_epoch=SPE, rows_per_step=R,
                               steps_per_call=K, local_rows=local_rows)


def test_chunks_hold_the_epoch_permutations_rows_in_order_across_epochs(source):
  stream = make(source)
  step = 0
  for n in (3, 3, 1, 2, 3, 3, 2, 3):  # boundaries cut some chunks short; 2 epochs and a bit
    chunk = stream.chunk(step, n)
    assert chunk.images.shape == (K * R, 2, 2, 1) and chunk.labels.shape == (K * R,)
    epoch, index = divmod(step, SPE)
    rows = expected_rows(3, epoch, index, n)
    np.testing.assert_array_equal(chunk.labels[:n * R], rows)  # labels are the row numbers
    np.testing.assert_array_equal(chunk.images[:n * R], source.images[rows])
    assert not chunk.labels[n * R:].any() and not chunk.images[n * R:].any()
    step += n
  stream.close()


def test_a_resumed_stream_streams_the_same_rows(source):
  first, resumed = make(source), make(source)
  for step in range(0, 9, 3):
    first.chunk(step, 3)
  np.testing.assert_array_equal(first.chunk(9, 3).labels, resumed.chunk(9, 3).labels)
  first.close(), resumed.close()


def test_each_process_reads_only_its_rows_of_a_chunk(source):
  reads = []

  class Counting(streaming.ArraySource):

    def read(self, rows):
      reads.extend(int(i) for i in rows)
      return super().read(rows)

  counting = Counting(source.images, source.labels)
  whole = make(source).chunk(0, 3)
  stream = make(counting, (6, 12))  # the second of two processes' blocks of a chunk
  half = stream.chunk(0, 3)
  np.testing.assert_array_equal(half.labels, whole.labels[6:12])
  stream.close()  # (its next chunk, read ahead, is of other rows of the epoch)
  assert set(whole.labels[6:12].tolist()) <= set(reads)
  assert not set(whole.labels[:6].tolist()) & set(reads)  # the other process's rows


def test_a_folders_unusable_file_is_replaced_by_the_next_usable_one(tmp_path):
  for i in range(4):
    Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
  (tmp_path / "1.png").write_bytes(b"broken")
  listing = image_folder.Listing([str(tmp_path / f"{i}.png") for i in range(4)],
                                 np.arange(4, dtype=np.int32), ["."])
  source = streaming.FolderSource(listing, 8, 1, "area")
  assert source[1][1] == 2 and int(source[1][0].mean()) == 100  # file 2 in its place
  assert source[3][1] == 3 and list(source.skipped) == [str(tmp_path / "1.png")]
  for i in range(4):
    (tmp_path / f"{i}.png").write_bytes(b"")
  with pytest.raises(data.DataError, match="no usable image among the 4 files"):
    streaming.FolderSource(listing, 8, 1, "area")[0]
  assert os.path.exists(tmp_path / "0.png")


def test_a_tfds_split_streams_only_the_records_it_is_given(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  read = []

  class Counting:  # the split's records, counting the keys read

    def __init__(self, records):
      self.records = records

    def __len__(self):
      return len(self.records)

    def __getitem__(self, key):
      read.append(key)
      return self.records[key]

  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    config = config_lib.get_config("vae_conv", dataset="tfds:cifar10", image_size=16, channels=1,
                                   max_device_bytes=1, tfds_data_dir=str(tmp_path))
    source = streaming.train_source(config, data.config_info(config))
    assert isinstance(source, streaming.RecordSource) and len(source) == 8
    whole, labels = data.load_config_split(config, "train")
    source.records = Counting(source.records)
    images, got_labels = source.read(np.array([5, 2]))
  assert read == [5, 2]  # those records alone, fitted as the whole split's are
  np.testing.assert_array_equal(images, whole[[5, 2]])
  np.testing.assert_array_equal(got_labels, labels[[5, 2]])


def test_worker_processes_decode_what_threads_do_and_report_the_bad_files(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(12):
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
  for bad in (3, 4, 11):
    (tmp_path / f"{bad}.png").write_bytes(b"broken")
  paths = [str(tmp_path / f"{i}.png") for i in range(12)]
  listing = image_folder.Listing(paths, np.arange(12, dtype=np.int32), ["."])
  rows = np.array([11, 3, 0, 5, 4, 2, 11])
  threads = streaming.FolderSource(listing, 8, 3, "bicubic")
  processes = streaming.FolderSource(listing, 8, 3, "bicubic", workers=2)
  try:
    want, got = threads.read(rows), processes.read(rows)
  finally:
    processes.close()
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], [0, 5, 0, 5, 5, 2, 0])  # 11 wraps to 0; 3 and 4 to 5
  assert got[0].shape == (7, 8, 8, 3) and sorted(processes.skipped) == sorted(
      paths[i] for i in (3, 4, 11))
  none = threads.read(np.array([], np.int64))  # no rows: empty arrays of the image shape
  assert none[0].shape == (0, 8, 8, 3) and none[0].dtype == np.uint8 and none[1].shape == (0,)


def test_decoding_workers_end_when_their_process_is_killed(tmp_path):
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "0.png")
  script = f"""
import os, numpy as np
from aigc_jax import image_folder, streaming
listing = image_folder.Listing([{str(tmp_path / "0.png")!r}], np.zeros(1, np.int32), ["."])
source = streaming.FolderSource(listing, 8, 1, "area", workers=2)
source.read(np.zeros(3, np.int64))
print(*source._pool._processes, flush=True)
os._exit(9)  # as SIGKILL would: no teardown, no shutdown of the pool
"""
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  workers = [int(pid) for pid in done.stdout.split()]
  assert done.returncode == 9 and len(workers) == 2, done.stderr[-2000:]
  deadline = time.monotonic() + 20
  while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
  """Whether process `pid` runs (a zombie, ended but not yet reaped by init, does not)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["none", "shard_map"])
def test_a_streamed_run_equals_the_on_device_run_bitwise(idx_dir, tmp_path, parallel, caplog):
  caplog.set_level(logging.INFO)
  runs = {}
  for name, max_bytes in (("on_device", 2_000_000_000), ("streamed", 1)):
    config = small_config(idx_dir, parallel=parallel, max_device_bytes=max_bytes,
                          num_train_steps=20)  # 2.5 epochs of 8 steps, chunks cut at epoch ends
    workdir = str(tmp_path / name)
    runs[name] = train.train_and_evaluate(config,
                                          workdir), workdir_lib.load_trained(workdir, "latest")
  streaming_lines = [r for r in caplog.records if "streaming the train split" in r.getMessage()]
  assert len(streaming_lines) == 1  # the streamed run, not the other
  streamed, on_device = runs["streamed"][1].state, runs["on_device"][1].state
  assert int(streamed.step) == int(on_device.step) == 20
  chex.assert_trees_all_equal(arrays(streamed), arrays(on_device))
  assert runs["streamed"][0] == runs["on_device"][0]


def test_the_input_pipeline_benchmark_times_loader_and_step(tmp_path, capsys):
  for i in range(40):
    Image.fromarray(np.full((12, 12), 5 * i, np.uint8)).save(tmp_path / f"{i}.png")
  args = [
      "--input_pipeline", "--model", "vae_mlp", "--dataset", f"folder:{tmp_path}", "--batch", "8",
      "--steps", "4", "--warmup", "1", "--json", "--config.image_size=8"
  ]
  cli.main(args)
  result = json.loads(capsys.readouterr().out)
  assert result["rows"] == 36 and result["image_shape"] == [8, 8, 3] and result["batch"] == 8
  for key in ("loader_images_per_s", "loader_and_step_images_per_s", "step_images_per_s"):
    assert result[key] > 0
  with pytest.raises(SystemExit) as e:
    cli.main(args[:4] + [f"folder:{tmp_path / 'nope'}"] + args[5:])
  assert e.value.code == 2 and "is not a directory" in capsys.readouterr().err
