"""Class-conditional DCGAN: label embedding concatenated to z in G, projection discriminator.

`label_mode='concat'` rather than multiplying z by the embedding: after 4 epochs (2000 samples,
2026-12-01) recall 0.59 against 0.30, at precision 0.86 against 0.87 and label accuracy 0.91
against 0.92 (FID 6.0 against 4.7).

python experiments/cgan_fashion_mnist.py --workdir runs/cgan_fashion_mnist [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="fashion_mnist", conditional=True,
                               label_mode="concat", batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
