"""The DCGAN, self-conditioned: G and D conditioned on 20 balanced pixel k-means clusters.

Unconditional (no label is read; the clusters come from the train images' pixels and are
sampled uniformly), evaluated like `dcgan_fashion_mnist.py`; the same networks plus a cluster
embedding concatenated to z and a projection in D.

python experiments/dcgan_self_conditioned_fashion_mnist.py --workdir runs/dcgan_self_conditioned
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="fashion_mnist", pixel_clusters=20,
                               label_mode="concat", batch_size=64, num_epochs=20)


if __name__ == "__main__":
  train.main(get_config)
