"""Writes a folder of synthetic RGB PNG images in class subfolders, with a few unusable files
planted, for trying `--config.dataset=folder:PATH` and timing the streamed input pipeline.

python benchmarks/synthetic_folder.py OUT_DIR [--num 5000] [--size 64] [--classes 4]

Class k draws discs, squares, rings or crosses (k mod 4) of random colour, size and place on a
random two-colour gradient. Planted: a truncated PNG, an empty file, a CMYK JPEG and a 16-bit
PNG; `folder:OUT_DIR` skips them and reports them.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

SHAPES = ("disc", "square", "ring", "cross")


def picture(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
  """uint8 (size, size, 3): one `shape` on a gradient background."""
  yy, xx = np.mgrid[:size, :size] / size
  a, b = rng.uniform(0, 255, (2, 3))
  image = a * (1 - yy[..., None]) + b * yy[..., None]
  cy, cx = rng.uniform(0.3, 0.7, 2)
  r = rng.uniform(0.12, 0.28)
  dy, dx = yy - cy, xx - cx
  mask = {
      "disc": dy**2 + dx**2 < r**2,
      "square": (abs(dy) < r) & (abs(dx) < r),
      "ring": (abs(np.sqrt(dy**2 + dx**2) - r) < r / 3),
      "cross": ((abs(dy) < r / 3) & (abs(dx) < r)) | ((abs(dx) < r / 3) & (abs(dy) < r)),
  }[shape]
  image[mask] = rng.uniform(0, 255, 3)
  return image.clip(0, 255).astype(np.uint8)


def write(out: str, num: int, size: int, classes: int, seed: int = 0) -> None:
  rng = np.random.default_rng(seed)
  for i in range(num):
    k = i % classes
    folder = os.path.join(out, f"class_{k}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(picture(rng, SHAPES[k % len(SHAPES)],
                            size)).save(os.path.join(folder, f"{i:06d}.png"))
  first = os.path.join(out, "class_0", "000000.png")
  with open(first, "rb") as f:
    whole = f.read()
  with open(os.path.join(out, "class_0", "truncated.png"), "wb") as f:
    f.write(whole[:len(whole) // 2])
  open(os.path.join(out, "class_0", "empty.png"), "wb").close()
  Image.open(first).convert("CMYK").save(os.path.join(out, "class_0", "cmyk.jpg"))
  deep = (np.asarray(Image.open(first).convert("L")).astype(np.uint16) * 257)
  Image.fromarray(deep).save(os.path.join(out, "class_0", "deep16.png"))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out")
  parser.add_argument("--num", type=int, default=5000)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--classes", type=int, default=4)
  args = parser.parse_args()
  if args.num < 1 or args.size < 8 or args.classes < 1:
    print("error: --num >= 1, --size >= 8 and --classes >= 1", file=sys.stderr)
    return 2
  write(args.out, args.num, args.size, args.classes)
  print(f"wrote {args.num} images and 4 unusable files in {args.classes} classes to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
