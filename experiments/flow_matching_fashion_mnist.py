"""Rectified flow on Fashion-MNIST: a U-Net (patch 2, widths 32 and 64, attention at 7x7)
learns the velocity from data to noise; samples by Heun's method.

Result (2026-12-02, 2-core AMD EPYC, shared part of the time with test runs): stopped by hand
after 1404 steps (3 epochs, 48 min); 10,000 EMA samples, Heun 10 steps: FID 11.76, precision
0.814, recall 0.604, IS 6.33 (floors 0.22 / 0.906 / 0.909 / 8.85); sampling them ~13 min quiet.

python experiments/flow_matching_fashion_mnist.py --workdir runs/flow [--config.KEY=VALUE ...]
python -m aigc_jax.evaluate --workdir runs/flow [--sample_steps 10 --sampler euler]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("unet", dataset="fashion_mnist", objective="flow", patch=2,
                               base_features=32, multipliers=(1, 2), batch_size=128,
                               learning_rate=1e-3, num_epochs=20, sample_steps=10,
                               eval_num_samples=0)


if __name__ == "__main__":
  train.main(get_config)
