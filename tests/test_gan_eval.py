"""GAN evaluation on real Fashion-MNIST: periodic FID during a short DCGAN run, falling below its
initial value; the evaluate command's metrics with their floors; real features extracted once.

The classifier is a stand-in for the cached 92% one: the same network trained for two epochs on
2048 images (~80% test accuracy, seconds instead of minutes), saved to a temporary cache under
the real recipe's key, so the family and the CLI load it exactly as they load the real one.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.evaluate import evaluate_workdir
from aigc_jax.metrics import classifier as clf_lib
from aigc_jax.metrics import classifier_net as net_lib
from aigc_jax.metrics import sample_metrics as sm_lib
from conftest import free_port
from conftest import needs_fashion_mnist

pytestmark = [needs_fashion_mnist, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVAL_EVERY, EVAL_SAMPLES = 120, 60, 500
SAMPLE_METRICS = {"fid", "kid", "kid_std", "precision", "recall", "is", "is_std"}


@pytest.fixture(name="cache")
def fixture_cache(cache_dir, monkeypatch):
  monkeypatch.setenv(clf_lib.CACHE_ENV, cache_dir)
  return cache_dir


def dcgan_config(**overrides):
  values = dict(batch_size=16, learning_rate=1e-3, num_train_steps=STEPS,
                eval_every_steps=EVAL_EVERY, log_every_steps=EVAL_EVERY,
                checkpoint_every_steps=STEPS, eval_num_samples=EVAL_SAMPLES, ema_decay=0.9,
                num_sample_images=16, progress_bar=False)
  return config_lib.get_config("dcgan", **{**values, **overrides})


@pytest.fixture(name="run", scope="module")
def fixture_run(cache_dir, tmp_path_factory):
  """A short DCGAN run's workdir: batch 16, lr 1e-3, 120 steps, evaluated every 60 steps on 500
  samples (its FID falls ~3x from initialization with the stand-in classifier)."""
  workdir = str(tmp_path_factory.mktemp("dcgan"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(clf_lib.CACHE_ENV, cache_dir)
    train.train_and_evaluate(dcgan_config(), workdir)
  return workdir


def spy_on_classifier(monkeypatch):
  """The image batches given to Classifier.features_and_logits, in call order."""
  calls, real = [], net_lib.Classifier.features_and_logits

  def spy(self, images):
    calls.append(np.asarray(images))
    return real(self, images)

  monkeypatch.setattr(net_lib.Classifier, "features_and_logits", spy)
  return calls


def test_periodic_evaluation_logs_sample_metrics_and_fid_falls(run, cache, monkeypatch):
  with open(os.path.join(run, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if r["split"] == "test"]
  assert [r["step"] for r in evals] == [EVAL_EVERY, STEPS]
  assert all(SAMPLE_METRICS <= set(r) for r in evals)

  config = dcgan_config()
  trainable = families.get("dcgan").build(config_lib.validate(config),
                                          data_lib.DATASETS["fashion_mnist"])
  test = workdir_lib.load_test_data(config)
  calls = spy_on_classifier(monkeypatch)
  initial = trainable.evaluate(jax.jit(trainable.init)(jax.random.PRNGKey(config.seed)), test)
  assert [len(c) for c in calls] == [EVAL_SAMPLES, EVAL_SAMPLES]  # real test images, then fakes
  # The logged numbers are this evaluation of the trained state: eval_num_samples samples.
  trained = workdir_lib.load_trained(run, "latest").state
  assert trainable.evaluate(trained, test)["fid"] == pytest.approx(evals[-1]["fid"], rel=1e-6)
  assert len(calls) == 3  # the test features were reused
  assert evals[-1]["fid"] < 0.5 * initial["fid"], (initial, evals)


def test_evaluate_command_prints_each_metric_with_its_floor(run, cache):
  done = subprocess.run([
      sys.executable, "-m", "aigc_jax.evaluate", "--workdir", run, "--checkpoint", "latest",
      "--num_samples", "300"
  ], cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ))
  assert done.returncode == 0, done.stderr[-2000:]
  [line] = done.stdout.strip().splitlines()  # one JSON object on stdout
  result = json.loads(line)
  assert result["step"] == STEPS and result["num_samples"] == 300
  for name in ("fid", "kid", "precision", "recall", "is"):
    assert f"{name}_floor" in result and f"raw_{name}" in result
  assert list(result).index("fid_floor") == list(result).index("fid") + 1
  assert result["fid_floor"] < result["fid"] / 3 and result["kid_floor"] < result["kid"] / 3

  # The floors are the same metrics of 300 real train images vs the same 300 test images,
  # computed here without the cache the command wrote beside the classifier.
  clf = clf_lib.load_or_train(progress=False)
  assert any(name.startswith("floors-") for name in os.listdir(clf.path))
  uncached = net_lib.Classifier(clf.model, clf.variables, clf.test_accuracy, clf.recipe)
  test_images = data_lib.load_split("fashion_mnist", "test")[0][:300]
  train_images = data_lib.load_split("fashion_mnist", "train")[0]
  floors = sm_lib.floors(uncached, train_images, clf.features(test_images), num_train=300)
  for name in ("fid", "kid", "precision", "recall", "is"):
    assert result[f"{name}_floor"] == pytest.approx(floors[name], rel=1e-6), name


def test_full_evaluate_extracts_the_real_features_once(run, cache, monkeypatch):
  test_images = workdir_lib.load_test_data(dcgan_config()).images[:200]
  classifier_dir = clf_lib.load_or_train(progress=False).path
  for name in os.listdir(classifier_dir):  # floors another test cached: none to reuse here
    if name.startswith("floors-"):
      os.remove(os.path.join(classifier_dir, name))
  calls = spy_on_classifier(monkeypatch)
  result = evaluate_workdir(run, "latest", num_samples=200)
  assert len(calls) == 4  # test images, EMA samples, train images (floors), raw samples
  assert sum(np.array_equal(c, test_images) for c in calls) == 1
  assert {f"{name}_floor" for name in ("fid", "kid", "precision", "recall", "is")} <= set(result)


def test_conditional_floors_include_the_classifier_accuracy(cache):
  config = config_lib.validate(dcgan_config(conditional=True))
  trainable = families.get("dcgan").build(config, data_lib.DATASETS["fashion_mnist"])
  state = jax.jit(trainable.init)(jax.random.PRNGKey(0))
  result = trainable.full_evaluate(state, workdir_lib.load_test_data(config), num_samples=200)
  assert "label_acc" in result and "raw_label_acc" in result
  assert result["label_acc_floor"] > 0.5 > result["label_acc"]  # real images vs untrained G


# One of two processes: process 0's metrics (its own numbers) reach both; a failure there raises
# in both instead of leaving process 1 waiting.
TWO_PROCESS_SCRIPT = """
import json, sys
import jax
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from aigc_jax.families import sample_eval
calls = []
def compute():
  calls.append(1)
  return {"fid": 1.0 / 3 + jax.process_index(), "kid": float("nan")}
out = sample_eval.from_process_zero(compute)
def fail():
  raise ValueError("no classifier")
try:
  sample_eval.from_process_zero(fail)
  error = None
except (ValueError, RuntimeError) as e:
  error = f"{type(e).__name__}: {e}"
print(json.dumps({"out": repr(out), "calls": len(calls), "error": error}))
"""


def test_sample_metrics_are_computed_by_process_zero_alone_and_shared():
  address = f"127.0.0.1:{free_port()}"
  workers = [
      subprocess.Popen([sys.executable, "-c", TWO_PROCESS_SCRIPT, address,
                        str(i)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True) for i in range(2)
  ]
  outputs = [w.communicate(timeout=120) for w in workers]
  assert [w.returncode for w in workers] == [0, 0], outputs
  results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  assert results[0]["out"] == results[1]["out"] == repr({"fid": 1.0 / 3, "kid": float("nan")})
  assert [r["calls"] for r in results] == [1, 0]
  assert results[0]["error"] == "ValueError: no classifier"
  assert results[1]["error"] == ("RuntimeError: process 0's evaluation failed: ValueError: no "
                                 "classifier")
