"""DCGAN for 32x32 RGB CIFAR-10: dense to 8x8x128, two sub-pixel 2x upsamplings to 3 channels;
a strided-conv discriminator (32 -> 16 -> 8). Its FID and the other sample metrics use a feature
classifier trained on CIFAR-10 by the project's recipe (trained and cached at the first
evaluation; see aigc_jax/metrics/classifier.py), so they are not comparable with Fashion-MNIST's.

python experiments/dcgan_cifar10.py --workdir runs/dcgan_cifar10 [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="cifar10", batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
