"""Convolutional VAE on Fashion-MNIST (sub-pixel upsampling decoder), 10 epochs.

python experiments/vae_conv_fashion_mnist.py --workdir runs/vae_conv [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("vae_conv", dataset="fashion_mnist", latent_dim=20, hidden_dim=256,
                               conv_features=(32, 64), batch_size=128, learning_rate=1e-3,
                               num_epochs=10)


if __name__ == "__main__":
  train.main(get_config)
