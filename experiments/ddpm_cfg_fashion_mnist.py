"""Class-conditional DDPM with classifier-free guidance on Fashion-MNIST: the U-Net of
ddpm_fashion_mnist.py with a label embedding, labels dropped 10% of the time in training, and
samples guided at scale 2 (each class asked for in turn; evaluation reports label_acc).

Result (partial; 2026-12-03, 2-core AVX-512 CPU, seed 0): only 5 of the 20 epochs were trained
(2340 steps; 1.5 steps/s on a quiet machine, 0.6-0.9 beside test runs). Scored on 1000 EMA
samples (DDIM, 25 steps) against the test set (FID floor 2.17, label_acc floor 0.978):

| epochs | guidance | label_acc | FID | precision | recall |
|---|---|---|---|---|---|
| 1 | 2 | 0.274 | 41.12 | 0.722 | 0.363 |
| 3 | 2 | 0.703 | 14.47 | 0.814 | 0.686 |
| 3 | 4 | 0.882 | 13.33 | 0.809 | 0.508 |
| 5 | 2 | 0.827 | 8.85 | 0.848 | 0.738 |
| 5 | 4 | 0.953 | 9.23 | 0.881 | 0.544 |

python experiments/ddpm_cfg_fashion_mnist.py --workdir runs/ddpm_cfg [--config.KEY=VALUE ...]
python -m aigc_jax.evaluate --workdir runs/ddpm_cfg [--guidance_scale 3]
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("unet", dataset="fashion_mnist", objective="eps",
                               schedule="cosine", patch=2, base_features=32, multipliers=(1, 2),
                               conditional=True, label_dropout=0.1, guidance_scale=2.0,
                               batch_size=128, learning_rate=1e-3, num_epochs=20,
                               sample_steps=25, eval_num_samples=0)


if __name__ == "__main__":
  train.main(get_config)
