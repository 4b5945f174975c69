"""Class-conditional MLP VAE on Fashion-MNIST: the label enters encoder and decoder.

Result: none recorded yet (its step time is in benchmarks/RESULTS.md, model `cvae`).

python experiments/cvae_fashion_mnist.py --workdir runs/cvae [--config.KEY=VALUE ...]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("vae_mlp", dataset="fashion_mnist", conditional=True, latent_dim=20,
                               hidden_dim=400, batch_size=128, learning_rate=1e-3, num_epochs=10)


if __name__ == "__main__":
  train.main(get_config)
