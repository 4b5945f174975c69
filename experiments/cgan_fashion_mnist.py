"""Class-conditional DCGAN: label embedding in G, projection discriminator.

python experiments/cgan_fashion_mnist.py --workdir runs/cgan_fashion_mnist [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="fashion_mnist", conditional=True, batch_size=64,
                               num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
