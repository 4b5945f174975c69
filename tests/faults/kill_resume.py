"""SIGKILL a training run at random moments, resume it each time, and compare its end with an
unbroken run's (a fault script, not part of the suite: a few minutes).

python tests/faults/kill_resume.py [--kills 10] [--steps 1000] [--seed 0]

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


def start(idx_dir: str, workdir: str, steps: int) -> subprocess.Popen:
  args = [
      sys.executable,
      os.path.join(ROOT, "experiments", "vae_mlp_fashion_mnist.py"), "--workdir", workdir,
      f"--config.idx_dir={idx_dir}", "--config.batch_size=32", "--config.hidden_dim=32",
      "--config.latent_dim=4", "--config.progress_bar=False", "--config.log_every_steps=4",
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
  args = parser.parse_args()
  chooser = random.Random(args.seed)
  with tempfile.TemporaryDirectory() as tmp:
    idx_dir, unbroken, killed = (os.path.join(tmp, n) for n in ("idx", "unbroken", "killed"))
    os.makedirs(idx_dir)
    write_blobs(idx_dir)
    assert start(idx_dir, unbroken, args.steps).wait() == 0
    for kill in range(args.kills):
      before = (saved_steps(killed) or [0])[-1]
      process = start(idx_dir, killed, args.steps)
      while (saved_steps(killed) or [0])[-1] <= before and process.poll() is None:
        time.sleep(0.01)  # until this start has saved a checkpoint of its own: mid-training
      moment = chooser.uniform(0.0, 1.0)
      time.sleep(moment)
      process.kill()
      process.wait()
      print(
          f"kill {kill + 1}: {moment:.2f} s after its first checkpoint; resumed from step "
          f"{before}, checkpoints now {saved_steps(killed)}", flush=True)
    process = start(idx_dir, killed, args.steps)
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    same = jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), arrays(killed),
                               arrays(unbroken)))
    print(f"resumed run after {args.kills} kills ends bitwise equal to the unbroken run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
