"""The 64-pixel experiment files train on a folder of images, streamed, under an accelerator's
defaults (emulated on the CPU; a GPU's and a TPU's choose the same programs, so each file runs
under one of them)."""

import os
import subprocess
import sys

import pytest
from helpers import read_jsonl

from aigc_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import synthetic_folder  # noqa: E402  (benchmarks/)

pytestmark = pytest.mark.slow
SHRINK = {
    "dcgan_folder64": ["--config.g_base_features=8", "--config.d_base_features=4"],
    "ddpm_folder64": [
        "--config.base_features=8", "--config.sample_steps=2", "--config.eval_num_samples=0"
    ],  # (its default: no sample metrics)
}
PLATFORM = {"dcgan_folder64": "gpu", "ddpm_folder64": "tpu"}


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_a_folder_experiment_trains_streamed_and_reports_the_bad_files(tmp_path, name):
  folder = tmp_path / "images"
  synthetic_folder.write(str(folder), num=120, size=64, classes=4)
  workdir = tmp_path / "run"
  done = subprocess.run(
      [
          sys.executable, f"experiments/{name}.py", "--workdir",
          str(workdir), f"--config.dataset=folder:{folder}", "--config.max_device_bytes=1",
          "--config.batch_size=16", "--config.num_train_steps=7", "--config.eval_every_steps=7",
          "--config.eval_num_samples=10", "--config.num_sample_images=4",
          "--config.progress_bar=False", *SHRINK[name]
      ], cwd=ROOT, capture_output=True, text=True, timeout=600, env={
          **os.environ, "AIGC_JAX_CACHE": str(tmp_path / "cache"),
          "AIGC_JAX_PLATFORM_DEFAULTS": PLATFORM[name]
      })
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"platform={PLATFORM[name]} (emulated on cpu)" in done.stderr
  assert "streaming the train split" in done.stderr
  # 124 files: 12 test (every tenth), 112 train read in the epoch's 7 steps of 16; 4 unusable.
  assert done.stderr.count("unusable files so far") + done.stderr.count("skipped 1 of") >= 1
  trained = workdir_lib.load_trained(str(workdir), "latest")
  assert int(trained.state.step) == 7 and trained.config.image_size == 64
  assert os.path.exists(workdir / "samples" / "samples_latest.png")
  test = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "test"][-1]
  assert test["step"] == 7
  if name == "dcgan_folder64":  # its classifier was trained on the folder's 4 classes at 64x64x3
    assert test["fid"] >= 0 and 0 <= test["precision"] <= 1
    assert os.listdir(tmp_path / "cache" / "classifier")[0].startswith("folder_")
