"""Wall time of Inception-V3 pool3 features: the port (jitted) against pytorch-fid's network.

  python benchmarks/inception_speed.py [--num 500] [--batch 50]

Both score the same `--num` random uint8 32x32x3 images in batches of `--batch`, resized to
299x299 as pytorch-fid does, with the same random weights (torchvision's initialisation: the
weights do not change the work), in one process on the same device. The port's first call
(which compiles) is reported apart; pytorch-fid's network runs in eval mode under no_grad, with
PyTorch's default threads. Prints one JSON line. Needs the `bench` extra (torch, torchvision,
pytorch-fid).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import jax
import numpy as np

from aigc_jax.metrics import inception


def import_torchvision(torch):
  """torchvision; beside a CPU build of torch, PyPI's wheel fails at import on two operators its
  models never use: they are declared first (as tests/test_inception.py does)."""
  try:
    return importlib.import_module("torchvision")
  except RuntimeError:
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
      del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision.library = library  # kept alive
    return importlib.import_module("torchvision")


def pytorch_fid_network(torch):
  """pytorch-fid's InceptionV3 (pool3), its weight download replaced by a random state dict."""
  torchvision = import_torchvision(torch)
  from pytorch_fid import inception as pf  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  state = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                          init_weights=False).state_dict()
  pf.load_state_dict_from_url = lambda *args, **kwargs: state
  return pf.InceptionV3([3]).eval(), state


def time_torch(torch, model, images: np.ndarray, batch: int) -> float:
  start = time.perf_counter()
  with torch.no_grad():
    for i in range(0, len(images), batch):
      x = torch.from_numpy(images[i:i + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255)
      model(x)[0].numpy()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=500)
  parser.add_argument("--batch", type=int, default=50)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top  # the bench extra
  model, state = pytorch_fid_network(torch)
  variables = inception.variables_from_state_dict({k: v.numpy() for k, v in state.items()})
  net = inception.Inception(variables, batch_size=args.batch)
  images = np.random.default_rng(0).integers(0, 256, (args.num, 32, 32, 3), dtype=np.uint8)
  start = time.perf_counter()
  net.features(images[:args.batch])
  first = time.perf_counter() - start
  start = time.perf_counter()
  net.features(images)
  ours = time.perf_counter() - start
  theirs = time_torch(torch, model, images, args.batch)
  print(
      json.dumps({
          "num_images": args.num, "batch": args.batch, "device": str(jax.devices()[0]),
          "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
          "jax_first_batch_s": round(first, 2), "jax_s": round(ours, 2),
          "pytorch_fid_s": round(theirs, 2), "jax_images_per_s": round(args.num / ours, 1),
          "pytorch_fid_images_per_s": round(args.num / theirs,
                                            1), "torch_threads": torch.get_num_threads()
      }))


if __name__ == "__main__":
  main()
