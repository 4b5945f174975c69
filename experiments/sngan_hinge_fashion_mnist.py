"""SN-GAN with the hinge loss: spectral normalization on every D layer.

python experiments/sngan_hinge_fashion_mnist.py --workdir runs/sngan_hinge_fashion_mnist \\
  [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="fashion_mnist", gan_loss="hinge",
                               spectral_norm=True,
                               learning_rate=2e-4, d_learning_rate=2e-4, adam_b1=0.5,
                               batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
