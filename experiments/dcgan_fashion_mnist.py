"""DCGAN for 28x28 Fashion-MNIST: dense to 7x7x128, two sub-pixel 2x upsamplings; strided-conv D.

python experiments/dcgan_fashion_mnist.py --workdir runs/dcgan_fashion_mnist \\
  [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="fashion_mnist", batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
