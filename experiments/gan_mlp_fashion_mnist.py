"""MLP GAN (PyTorch-GAN's fully connected G and D, z=100, tanh output) on Fashion-MNIST.

Result (date and wall time not recorded, 2-core CPU): after 20 epochs (best checkpoint), 10,000
EMA samples: FID 12.62, precision 0.935, recall 0.138, IS 6.95 (floors 0.20 / 0.905 / 0.901 /
8.83); raw G FID 23.72. Evaluate with: python -m aigc_jax.evaluate --workdir W

python experiments/gan_mlp_fashion_mnist.py --workdir runs/gan_mlp_fashion_mnist \\
  [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("gan_mlp", dataset="fashion_mnist", batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
