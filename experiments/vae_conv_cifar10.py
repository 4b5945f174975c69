"""Convolutional VAE on 32x32 RGB CIFAR-10 with a discretized logistic likelihood.

The decoder outputs a mean and a log-scale per pixel and channel (6 channels); p(x|z) is a
logistic discretized to the 256 intensity levels (PixelCNN++'s, one component), so the
neg-ELBO is a bound on a discrete NLL in nats per image (bits per dim: divide by 3072 ln 2).
Samples and reconstructions show the decoder's mean, clipped to [0, 1].

python experiments/vae_conv_cifar10.py --workdir runs/vae_conv_cifar10 [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("vae_conv", dataset="cifar10", likelihood="discretized_logistic",
                               latent_dim=64, hidden_dim=512, conv_features=(64, 128),
                               conv_activation="silu", batch_size=64, learning_rate=1e-3,
                               lr_schedule="cosine", ema_decay=0.99, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
