"""SIGKILL a training run at random moments, resume it each time, and compare its end with an
unbroken run's (a fault script, not part of the suite: a few minutes).

python tests/faults/kill_resume.py [--kills 10] [--steps 1000] [--seed 0] [--streamed_folder]

With --streamed_folder the runs train on a folder of PNG images (two of them unusable) that
streams (max_device_bytes=1) instead of the IDX files on device.

Prints each kill's moment and the step the next start resumed from, then whether the resumed
run's final parameters, optimizer and model states are bitwise those of the unbroken run.
Exits 1 when they are not.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, os.path.dirname(HERE)]

import jax  # noqa: E402
from helpers import write_blobs  # noqa: E402

from aigc_jax import workdir as workdir_lib  # noqa: E402


def write_folder(directory: str, n: int = 300) -> None:
  """`n` 20x20 PNG blobs in two class folders, a truncated PNG and an empty one."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:20, :20]
  for i in range(n):
    label = i % 2
    os.makedirs(os.path.join(directory, str(label)), exist_ok=True)
    cy, cx = rng.uniform(6, 14, 2)
    blob = np.exp(-((yy - cy)**2 + (xx - cx)**2) / (8.0 + 20 * label)) * 255
    Image.fromarray(blob.astype(np.uint8)).save(os.path.join(directory, str(label), f"{i}.png"))
  with open(os.path.join(directory, "0", "0.png"), "rb") as f:
    whole = f.read()
  with open(os.path.join(directory, "1", "cut.png"), "wb") as f:
    f.write(whole[:len(whole) // 2])
  open(os.path.join(directory, "0", "empty.png"), "wb").close()


def start(data: list[str], workdir: str, steps: int) -> subprocess.Popen:
  args = [
      sys.executable,
      os.path.join(ROOT, "experiments", "vae_mlp_fashion_mnist.py"), "--workdir", workdir, *data,
      "--config.batch_size=32", "--config.hidden_dim=32", "--config.latent_dim=4",
      "--config.progress_bar=False", "--config.log_every_steps=4",
      f"--config.eval_every_steps={steps}", "--config.checkpoint_every_steps=8",
      "--config.steps_per_call=4", "--config.eval_batch_size=50",
      f"--config.num_train_steps={steps}"
  ]
  return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def saved_steps(workdir: str) -> list[int]:
  directory = workdir_lib.checkpoint_dir(workdir)
  return sorted(
      int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def arrays(workdir: str):
  state = workdir_lib.load_trained(workdir, "latest").state
  return {n: (p.params, p.opt_state, p.model_state) for n, p in state.players.items()}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=10)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--streamed_folder", action="store_true")
  args = parser.parse_args()
  chooser = random.Random(args.seed)
  with tempfile.TemporaryDirectory() as tmp:
    source, unbroken, killed = (os.path.join(tmp, n) for n in ("data", "unbroken", "killed"))
    os.makedirs(source)
    if args.streamed_folder:
      write_folder(source)
      data = [
          f"--config.dataset=folder:{source}", "--config.image_size=16", "--config.channels=1",
          "--config.max_device_bytes=1"
      ]
    else:
      write_blobs(source)
      data = [f"--config.idx_dir={source}"]
    assert start(data, unbroken, args.steps).wait() == 0
    for kill in range(args.kills):
      before = (saved_steps(killed) or [0])[-1]
      process = start(data, killed, args.steps)
      while (saved_steps(killed) or [0])[-1] <= before and process.poll() is None:
        time.sleep(0.01)  # until this start has saved a checkpoint of its own: mid-training
      moment = chooser.uniform(0.0, 1.0)
      time.sleep(moment)
      process.kill()
      process.wait()
      print(
          f"kill {kill + 1}: {moment:.2f} s after its first checkpoint; resumed from step "
          f"{before}, checkpoints now {saved_steps(killed)}", flush=True)
    process = start(data, killed, args.steps)
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    same = jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), arrays(killed),
                               arrays(unbroken)))
    print(f"resumed run after {args.kills} kills ends bitwise equal to the unbroken run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
