r"""A folder of ImageNet-sized JPEGs for timing input pipelines, made without a download.

    python bench/jpeg_folder.py --out /tmp/jpegs [--count 256] [--quality 90]

Writes `count` RGB JPEGs of 427x640 (height x width, the size of a typical ImageNet
photo) to OUT/train/img_00000.jpg, ..., so that sslx's input benchmark and its
PyTorch peer decode and augment the same files:

    python bench/input_pipeline.py --config=configs/X.py --config.data.source=folder \
        --config.data.path=/tmp/jpegs
    python bench/peers/input_pipeline.py --path /tmp/jpegs --recipe simclr

Each file is one of the two photos scikit-learn ships (`load_sample_images()`:
china.jpg and flower.jpg, both 427x640), randomly flipped, cropped to 80-100% of
its size and resized back, and brightened or darkened, so no two files are equal
and no decoder can share work between them. The same `--count` gives the same files.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_images

HEIGHT, WIDTH = 427, 640
SEED = 0


def vary(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random flip, crop (80-100% of each side) resized back, and brightness of `photo`."""
    if rng.random() < 0.5:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    fraction = rng.uniform(0.8, 1.0)
    w, h = round(WIDTH * fraction), round(HEIGHT * fraction)
    left = int(rng.integers(0, WIDTH - w + 1))
    top = int(rng.integers(0, HEIGHT - h + 1))
    photo = photo.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC,
                         box=(left, top, left + w, top + h))
    return ImageEnhance.Brightness(photo).enhance(rng.uniform(0.8, 1.2))


def write_folder(out: str, count: int, quality: int) -> str:
    """Writes the `count` JPEGs to `out`/train and returns that directory."""
    photos = [Image.fromarray(a).convert("RGB") for a in load_sample_images().images]
    for photo in photos:
        assert photo.size == (WIDTH, HEIGHT), photo.size
    train = os.path.join(out, "train")
    os.makedirs(train, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for i in range(count):
        image = vary(photos[int(rng.integers(len(photos)))], rng)
        image.save(os.path.join(train, f"img_{i:05d}.jpg"), quality=quality)
    return train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory; the JPEGs go to OUT/train")
    p.add_argument("--count", type=int, default=256, help="number of JPEGs")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (1-95)")
    args = p.parse_args()
    train = write_folder(args.out, args.count, args.quality)
    print(f"wrote {args.count} JPEGs of {HEIGHT}x{WIDTH} (quality {args.quality}) to {train}")


if __name__ == "__main__":
    main()
