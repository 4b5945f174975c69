"""DCGAN for 64x64 RGB images of your own: the PNG and JPEG files of a folder (class subfolders
become labels; see README "Your own data"). G: dense to 8x8x128, three sub-pixel 2x upsamplings;
D: strided convs 64 -> 32 -> 16 -> 8. The sample metrics use the project's feature classifier
trained on the folder's own classes at the first evaluation (see docs/metrics.md: on data it was
not built for, their scale is the folder's, comparable only between runs on that folder).

Not yet shown to learn (2026-12-06, 2-core AMD EPYC): on benchmarks/synthetic_folder.py's 5,000
shapes, streamed, 420 steps left D winning (d_loss 0.007 at step 200) and every sample the same
noise (FID 1289, 5791, 939 at steps 140, 280, 420; the 32-pixel network did the same in 300
steps), so the recipe for this data is still to be found, on a GPU.

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
