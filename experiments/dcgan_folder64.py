"""DCGAN for 64x64 RGB images of your own: the PNG and JPEG files of a folder (class subfolders
become labels; see README "Your own data"). G: dense to 8x8x128, three sub-pixel 2x upsamplings;
D: strided convs 64 -> 32 -> 16 -> 8. The sample metrics use the project's feature classifier
trained on the folder's own classes at the first evaluation (see docs/metrics.md: on data it was
not built for, their scale is the folder's, comparable only between runs on that folder).

python benchmarks/synthetic_folder.py data/shapes64   # 5,000 synthetic shapes, 4 bad files
python experiments/dcgan_folder64.py --workdir runs/dcgan64 --config.dataset=folder:data/shapes64
    [--config.max_device_bytes=1]   # stream it (any folder larger than 2e9 bytes streams)
"""

from aigc_jax import config as config_lib
from aigc_jax import train


def get_config():
  return config_lib.get_config("dcgan", dataset="folder:data/shapes64", image_size=64, channels=3,
                               batch_size=64, num_epochs=10, eval_num_samples=1000)


if __name__ == "__main__":
  train.main(get_config)
