"""MLP GAN (PyTorch-GAN's fully connected G and D, z=100, tanh output) on Fashion-MNIST.

python experiments/gan_mlp_fashion_mnist.py --workdir runs/gan_mlp_fashion_mnist \\
  [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("gan_mlp", dataset="fashion_mnist", batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
