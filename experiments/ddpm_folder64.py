"""DDPM for 64x64 RGB images of your own (a folder of PNG and JPEG files; see README "Your own
data"): the U-Net of ddpm_fashion_mnist.py with one more level at 64 pixels (widths 32, 32, 64,
64, patch 2), predicting the noise under a cosine schedule, min-SNR weighted; 50 ancestral
sampling steps. Meant for a GPU: on 2 CPU cores a step takes seconds.

python benchmarks/synthetic_folder.py data/shapes64   # 5,000 synthetic shapes, 4 bad files
python experiments/ddpm_folder64.py --workdir runs/ddpm64 --config.dataset=folder:data/shapes64
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("unet", dataset="folder:data/shapes64", image_size=64, channels=3,
                               objective="eps", schedule="cosine", min_snr_gamma=5.0, patch=2,
                               base_features=32, multipliers=(1, 2, 2), batch_size=64,
                               learning_rate=1e-3, lr_schedule="cosine", num_epochs=20,
                               sampler="ddpm", sample_steps=50, eval_num_samples=0)


if __name__ == "__main__":
  train.main(get_config)
