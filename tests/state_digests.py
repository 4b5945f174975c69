"""The reference runs' final states as sha256 digests, one per leaf: a refactor that must not
change the numbers prints the same JSON before and after (bitwise, on the same CPU).

python tests/state_digests.py OUT.json [--compare BEFORE.json] [--only NAME]

Runs, on real Fashion-MNIST ($AIGC_JAX_IDX_DIR or the Debian directory), through the entry
points as a user would: the MLP VAE for one epoch, the DCGAN for 200 steps, a 4-member MLP VAE
sweep for 100 steps and the DDPM for 200 steps (about 10 minutes on 2 cores). With --compare,
prints each leaf that differs and exits 1 if any does.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax import workdir as workdir_lib  # noqa: E402

QUIET = ["--config.progress_bar=False", "--config.num_sample_images=4"]
FEW_SAMPLES = "--config.eval_num_samples=10"  # the fewest sample metrics allow
RUNS = {  # name: (entry point arguments, the workdirs whose states are compared)
    "vae_mlp_1_epoch": (["experiments/vae_mlp_fashion_mnist.py", "--config.num_epochs=1"],
                        [""]),
    "dcgan_200_steps": (["experiments/dcgan_fashion_mnist.py", "--config.num_train_steps=200",
                         "--config.eval_every_steps=200", FEW_SAMPLES], [""]),
    "vae_mlp_sweep_4x100": (["-m", "aigc_jax.sweep", "experiments/vae_mlp_fashion_mnist.py",
                             "--vary", "learning_rate=1e-4,1e-3,3e-3,1e-2", "--members", "4",
                             "--config.num_train_steps=100", "--config.eval_every_steps=100"],
                            [f"members/{i:02d}" for i in range(4)]),
    "ddpm_200_steps": (["experiments/ddpm_fashion_mnist.py", "--config.num_train_steps=200",
                        "--config.eval_every_steps=200", "--config.sample_steps=2",
                        FEW_SAMPLES], [""]),
}


def digests(workdir: str) -> dict[str, str]:
  """{leaf path: sha256 of its bytes, dtype and shape} of the newest checkpoint's state."""
  state = workdir_lib.load_trained(workdir, "latest").state
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    array = np.asarray(leaf)
    h = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    out[jax.tree_util.keystr(path)] = h.hexdigest()[:16]
  return out


def run(name: str, root: str) -> dict[str, dict[str, str]]:
  args, parts = RUNS[name]
  workdir = os.path.join(root, name)
  env = {**os.environ, "PYTHONPATH": ROOT}  # this checkout's package, wherever it is installed
  done = subprocess.run([sys.executable, *args, "--workdir", workdir, *QUIET], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=False)
  if done.returncode:
    sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
  return {part or ".": digests(os.path.join(workdir, part)) for part in parts}


def compare(before: dict, after: dict) -> list[str]:
  """The leaves (run/part/leaf) whose digests differ or that only one side has."""

  def flat(d):
    return {
        f"{r}/{p}/{k}": v for r, ps in d.items() for p, leaves in ps.items()
        for k, v in leaves.items()
    }

  a, b = flat(before), flat(after)
  return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out")
  parser.add_argument("--compare", metavar="BEFORE.json")
  parser.add_argument("--only", action="append", choices=sorted(RUNS))
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    result = {name: run(name, root) for name in args.only or RUNS}
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  leaves = sum(len(p) for parts in result.values() for p in parts.values())
  print(f"{len(result)} runs, {leaves} leaves -> {args.out}")
  if args.compare:
    with open(args.compare) as f:
      before = {k: v for k, v in json.load(f).items() if k in result}
    differ = compare(before, result)
    print("\n".join(differ) or "every leaf is bitwise the same")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
  main()
