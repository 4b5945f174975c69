"""DDPM on Fashion-MNIST: the U-Net of flow_matching_fashion_mnist.py predicting the noise under
a cosine schedule of 1000 steps; samples by DDIM.

Result: not measured yet.

python experiments/ddpm_fashion_mnist.py --workdir runs/ddpm [--config.KEY=VALUE ...]
python -m aigc_jax.evaluate --workdir runs/ddpm [--sample_steps 50 --sampler ddpm]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("unet", dataset="fashion_mnist", objective="eps",
                               schedule="cosine", patch=2, base_features=32, multipliers=(1, 2),
                               batch_size=128, learning_rate=1e-3, num_epochs=20,
                               sample_steps=25, eval_num_samples=0)


if __name__ == "__main__":
  train.main(get_config)
