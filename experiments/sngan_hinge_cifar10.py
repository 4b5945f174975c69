"""SN-GAN with the hinge loss on 32x32 RGB CIFAR-10: the DCGAN generator (8x8 -> 32x32, 3
channels) and its discriminator with spectral normalization on every layer. Sample metrics use
the CIFAR-10 feature classifier (see experiments/dcgan_cifar10.py).

python experiments/sngan_hinge_cifar10.py --workdir runs/sngan_cifar10 [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="cifar10", gan_loss="hinge", spectral_norm=True,
                               learning_rate=2e-4, d_learning_rate=2e-4, adam_b1=0.5, batch_size=64,
                               num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
