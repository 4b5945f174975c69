"""The training loop end to end on a small synthetic IDX dataset: files, resume, CLIs, errors."""

import json
import os
import subprocess
import sys

import chex
import numpy as np
import pytest
from helpers import STEADY_ADAM
from helpers import arrays
from helpers import read_jsonl
from helpers import small_config

from aigc_jax import families
from aigc_jax import train
from aigc_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.curves
def test_run_writes_metrics_samples_and_checkpoints(idx_dir, tmp_path):
  workdir = str(tmp_path / "run")
  metrics = train.train_and_evaluate(small_config(idx_dir), workdir)
  assert set(metrics) == {"neg_elbo", "recon", "kl"}
  records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records if r["split"] == "train"] == [4, 8, 12, 16]
  assert [r["step"] for r in records if r["split"] == "test"] == [8, 16]
  assert records[-1]["neg_elbo"] == pytest.approx(metrics["neg_elbo"])
  samples = sorted(os.listdir(os.path.join(workdir, "samples")))
  assert "samples_0000016.png" in samples and "reconstructions_0000008.png" in samples
  assert sorted(os.listdir(os.path.join(workdir, "plots"))) == ["eval.png", "train.png"]
  events = [
      os.path.join(workdir, "tensorboard", name)
      for name in os.listdir(os.path.join(workdir, "tensorboard")) if name.startswith("events")
  ]
  with open(events[0], "rb") as f:
    content = f.read()
  # the grids as PNG images (2 evaluations x samples and reconstructions) beside the scalars
  assert content.count(b"\x89PNG") == 4 and b"reconstructions" in content
  run = workdir_lib.load_trained(workdir, "latest")
  assert run.step == 16 and int(run.state.step) == 16


@pytest.mark.slow
def test_resume_continues_exactly(idx_dir, tmp_path):
  """8 steps, stop, resume to 16 == 16 unbroken, bitwise, across the epoch boundary (8 steps)."""
  unbroken = str(tmp_path / "unbroken")
  resumed = str(tmp_path / "resumed")
  train.train_and_evaluate(small_config(idx_dir), unbroken)
  train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), resumed)
  train.train_and_evaluate(small_config(idx_dir), resumed)
  a = workdir_lib.load_trained(unbroken, "latest").state
  b = workdir_lib.load_trained(resumed, "latest").state
  assert int(a.step) == int(b.step) == 16
  chex.assert_trees_all_equal(arrays(a), arrays(b))

  def strip(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]

  assert strip(read_jsonl(os.path.join(unbroken, "metrics.jsonl"))) == strip(
      read_jsonl(os.path.join(resumed, "metrics.jsonl")))


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(idx_dir, tmp_path):
  a = train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), str(tmp_path / "a"))
  b = train.train_and_evaluate(small_config(idx_dir, num_train_steps=8), str(tmp_path / "b"))
  c = train.train_and_evaluate(small_config(idx_dir, num_train_steps=8, seed=1),
                               str(tmp_path / "c"))
  assert a == b and a != c


@pytest.mark.slow
def test_steps_per_call_does_not_change_the_result(idx_dir, tmp_path):
  a = train.train_and_evaluate(small_config(idx_dir, steps_per_call=1, **STEADY_ADAM),
                               str(tmp_path / "a"))
  b = train.train_and_evaluate(small_config(idx_dir, steps_per_call=4, **STEADY_ADAM),
                               str(tmp_path / "b"))
  np.testing.assert_allclose(a["neg_elbo"], b["neg_elbo"], rtol=1e-5)


@pytest.mark.parametrize("steps_per_call,traces", [(1, 1), (3, 2)])
@pytest.mark.slow
def test_no_retrace_across_steps_chunks_and_epochs(idx_dir, tmp_path, monkeypatch, steps_per_call,
                                                   traces):
  """3 epochs (8 steps each), chunks of 4 steps between logs and evaluations, run as 4 calls of
  one step or as calls of 3 + 1 steps: the train step is traced once per compiled function
  (with K > 1 the loop traces it twice: once for the metrics' shapes, once for the loop body)."""
  chex.clear_trace_counter()  # chex counts per function definition, across tests
  family = families.get("vae_mlp")
  build = family.build

  def counted_build(*args, **kwargs):
    trainable = build(*args, **kwargs)

    def train_step(state, batch, axis_name=None):  # a function of its own, for chex to count
      return trainable.train_step(state, batch, axis_name=axis_name)

    return trainable._replace(train_step=chex.assert_max_traces(train_step, n=traces))

  monkeypatch.setattr(family, "build", counted_build)
  config = small_config(idx_dir, num_train_steps=24, steps_per_call=steps_per_call)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  records = read_jsonl(os.path.join(tmp_path, "run", "metrics.jsonl"))
  assert [r["step"] for r in records if r["split"] == "train"] == [4, 8, 12, 16, 20, 24]


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best(idx_dir, tmp_path):
  # lr so large that the eval metric soon stops improving, yet small enough to stay finite.
  config = small_config(idx_dir, num_train_steps=400, eval_every_steps=4, learning_rate=0.1,
                        early_stopping_patience=2, keep_checkpoints=1)
  workdir = str(tmp_path / "early")
  train.train_and_evaluate(config, workdir)
  evals = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "test"]
  assert evals[-1]["step"] < 400
  best = min(evals, key=lambda r: r["neg_elbo"])
  assert all(r["neg_elbo"] >= best["neg_elbo"] for r in evals[-2:])
  assert workdir_lib.load_trained(workdir, "best").step == best["step"]


def test_divergence_stops_with_a_clear_error(idx_dir, tmp_path):
  config = small_config(idx_dir, learning_rate=1e9, num_train_steps=40)
  with pytest.raises(train.TrainingError, match="diverged.*lower learning_rate"):
    train.train_and_evaluate(config, str(tmp_path / "nan"))


def _python(*args, cwd=ROOT):
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.slow
def test_experiment_sample_and_evaluate_commands(idx_dir, tmp_path):
  workdir = str(tmp_path / "cli")
  done = _python("experiments/cvae_fashion_mnist.py", "--workdir", workdir,
                 f"--config.idx_dir={idx_dir}", "--config.num_train_steps=8",
                 "--config.eval_every_steps=8", "--config.batch_size=32",
                 "--config.progress_bar=False", "--config.eval_iwae_samples=10",
                 "--config.eval_iwae_examples=5")
  assert done.returncode == 0, done.stderr[-2000:]
  assert "test_neg_elbo=" in done.stdout

  out = str(tmp_path / "s.npz")
  done = _python("-m", "aigc_jax.sample", "--workdir", workdir, "--num", "12", "--out", out)
  assert done.returncode == 0, done.stderr[-2000:]
  with np.load(out) as f:
    assert f["images"].shape == (12, 28, 28) and f["images"].dtype == np.uint8
    np.testing.assert_array_equal(f["labels"], np.arange(12) % 10)

  done = _python("-m", "aigc_jax.evaluate", "--workdir", workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["step"] == 8 and result["nll_iwae_samples"] == 10
  assert result["nll_iwae"] < result["nll_iwae_subset_neg_elbo"]
  assert np.isfinite(result["test_neg_elbo"])


@pytest.mark.slow
def test_commands_fail_with_one_clear_line(idx_dir, tmp_path):
  done = _python("experiments/vae_mlp_fashion_mnist.py", "--workdir", str(tmp_path / "x"),
                 "--config.lerning_rate=0.1")
  assert done.returncode == 2 and "did you mean 'learning_rate'" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1
  done = _python("-m", "aigc_jax.evaluate", "--workdir", str(tmp_path / "nothing"))
  assert done.returncode == 2 and "not found" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1
  bad = tmp_path / "bad_idx"
  bad.mkdir()
  (bad / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
  done = _python("experiments/vae_mlp_fashion_mnist.py", "--workdir", str(tmp_path / "y"),
                 f"--config.idx_dir={bad}")
  assert done.returncode == 2 and "error:" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1, done.stderr
