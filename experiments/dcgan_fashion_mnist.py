"""DCGAN for 28x28 Fashion-MNIST: dense to 7x7x128, two sub-pixel 2x upsamplings; strided-conv D.

The classic recipe (Adam 2e-4, betas (0.5, 0.999), batch 64) with PyTorch's initialisation and,
like the original, no moving average of G: at 5 epochs an EMA (`--config.ema_decay=0.999`)
trades precision for recall.

Result (2026-12-02, 2-core AMD EPYC, `python benchmarks/reference_quality.py
experiments/dcgan_fashion_mnist.py --workdir W`): after 5 epochs, 10,000 samples, seeds 0-2:
FID 11.81, precision 0.566, recall 0.580, against 13.93 / 0.564 / 0.553 for the PyTorch DCGAN it
reproduces (transposed convolutions, PyTorch's initialisation) on the same budget. After this
file's 20 epochs (`--epochs 20 --seeds 0`, 36 min of training and sampling): FID 5.64, precision
0.626, recall 0.717, against 7.39 / 0.597 / 0.659 for the original. History and probes:
docs/results.md. Evaluate with:
python -m aigc_jax.evaluate --workdir runs/dcgan_fashion_mnist

python experiments/dcgan_fashion_mnist.py --workdir runs/dcgan_fashion_mnist \\
  [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="fashion_mnist", batch_size=64, num_epochs=20,
                               torch_init=True, ema_decay=0.0)


if __name__ == "__main__":
  train.main(get_config)
