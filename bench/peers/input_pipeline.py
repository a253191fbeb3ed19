r"""PyTorch peer of `bench/input_pipeline.py`: images/s of the DINO or SimCLR training
input (JPEG decode, crops, augmentations, batching) as the official PyTorch code builds
it, with a `torch.utils.data.DataLoader` over a folder of JPEGs and no model.

    python bench/jpeg_folder.py --out /tmp/jpegs     # 256 JPEGs of 427x640
    pip install torch pillow   # never dependencies of sslx, nor imported by it or its tests
    python bench/peers/input_pipeline.py --path /tmp/jpegs --recipe dino|simclr \
        [--batch_size 64] [--batches 20] [--warmup 3] [--workers 1] [--local_crops 6]

Each image is opened with PIL and converted to RGB (torchvision's `pil_loader`); each
view is torchvision's PIL code path written out here (torchvision itself is not
needed): RandomResizedCrop, RandomHorizontalFlip(0.5), RandomApply(ColorJitter, 0.8),
RandomGrayscale(0.2), then PIL's Gaussian blur (DINO's `utils.GaussianBlur`, sigma in
[0.1, 2]), DINO's Solarization, ToTensor and Normalize (ImageNet mean and std).

- simclr: 2 views of 224 px, scale (0.08, 1), bilinear, jitter (0.8, 0.8, 0.8, 0.2),
  blur p 0.5.
- dino (DINO's `DataAugmentationDINO` with its defaults): 2 global views of 224 px,
  scale (0.4, 1), jitter (0.4, 0.4, 0.2, 0.1), blur p 1.0 and 0.1, solarization p 0.2
  on the second; `--local_crops` views of 96 px, scale (0.05, 0.4), blur p 0.5; all
  bicubic.

Random draws come from torch (torchvision's transforms) and Python's `random` (DINO's
blur and solarization), which the DataLoader seeds in each worker. `--workers N` is
the DataLoader's `num_workers` (0: the main process loads); the main process uses one
torch thread, so images/s per core is images/s / max(1, workers). Timing as sslx's
benchmark: `--warmup` untimed batches (which also fill the prefetch queue), then
`--batches` timed. Prints one JSON line, then a readable one.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
RATIO = (3 / 4, 4 / 3)


def uniform(low: float, high: float) -> float:
    """`torch.empty(1).uniform_(low, high)`, torchvision's draw."""
    return float(torch.empty(1).uniform_(low, high))


def crop_params(width: int, height: int, scale: tuple[float, float],
                ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """`(top, left, h, w)` of torchvision's `RandomResizedCrop.get_params`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * uniform(scale[0], scale[1])
        aspect_ratio = math.exp(uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)))
            left = int(torch.randint(0, width - w + 1, size=(1,)))
            return top, left, h, w
    in_ratio = width / height  # fallback: the central crop of the nearest allowed ratio
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Image.Image, size: int, scale: tuple[float, float],
                        resample: Image.Resampling) -> Image.Image:
    """torchvision's `RandomResizedCrop(size, scale, (3/4, 4/3), resample)` on a PIL image.

    One `resize` with `box` instead of torchvision's crop then resize: the same pixels
    inside, and the filter reads past the crop's edge, so edge pixels differ slightly."""
    top, left, h, w = crop_params(img.width, img.height, scale)
    return img.resize((size, size), resample, box=(left, top, left + w, top + h))


def hflip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision's PIL `adjust_hue`: H of HSV shifted by `hue_factor` turns, mod 256.

    torchvision adds `np.uint8(hue_factor * 255)`, which NumPy 2 refuses for negative
    factors; the int8 value viewed as uint8 is the same wrapped amount."""
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.int8(int(hue_factor * 255)).view(np.uint8)
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert(img.mode)


def color_jitter(img: Image.Image, brightness: float, contrast: float, saturation: float,
                 hue: float) -> Image.Image:
    """torchvision's `ColorJitter` on a PIL image: the four ops in a random order (an op
    of strength 0 draws nothing and is skipped, as there)."""
    order = torch.randperm(4)
    b = uniform(max(0.0, 1 - brightness), 1 + brightness) if brightness else None
    c = uniform(max(0.0, 1 - contrast), 1 + contrast) if contrast else None
    s = uniform(max(0.0, 1 - saturation), 1 + saturation) if saturation else None
    h = uniform(-hue, hue) if hue else None
    for op in order.tolist():
        if op == 0 and b is not None:
            img = ImageEnhance.Brightness(img).enhance(b)
        elif op == 1 and c is not None:
            img = ImageEnhance.Contrast(img).enhance(c)
        elif op == 2 and s is not None:
            img = ImageEnhance.Color(img).enhance(s)
        elif op == 3 and h is not None:
            img = adjust_hue(img, h)
    return img


def grayscale3(img: Image.Image) -> Image.Image:
    """torchvision's PIL `to_grayscale(img, num_output_channels=3)`."""
    gray = np.array(img.convert("L"), dtype=np.uint8)
    return Image.fromarray(np.dstack([gray, gray, gray]), "RGB")


def gaussian_blur(img: Image.Image, p: float) -> Image.Image:
    """DINO's `utils.GaussianBlur(p)`: PIL's blur, radius uniform in [0.1, 2]."""
    if random.random() <= p:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """`ToTensor` then `Normalize(ImageNet mean, std)`: uint8 HWC -> normalised float CHW."""
    x = torch.from_numpy(np.array(img, np.uint8, copy=True))
    x = x.view(img.height, img.width, 3).permute(2, 0, 1).contiguous().float().div(255)
    return (x - MEAN) / STD


@dataclass(frozen=True)
class View:
    """One crop's transform, in the order of DINO's and SimCLR's `Compose`."""

    size: int
    scale: tuple[float, float]
    resample: Image.Resampling
    jitter: tuple[float, float, float, float]
    blur_p: float
    solarize_p: float = 0.0

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = random_resized_crop(img, self.size, self.scale, self.resample)
        if torch.rand(1) < 0.5:
            img = hflip(img)
        if torch.rand(1) <= 0.8:  # RandomApply(p=0.8) skips when 0.8 < rand
            img = color_jitter(img, *self.jitter)
        if torch.rand(1) < 0.2:
            img = grayscale3(img)
        img = gaussian_blur(img, self.blur_p)
        if self.solarize_p and random.random() < self.solarize_p:  # DINO's Solarization
            img = ImageOps.solarize(img, 128)
        return to_tensor(img)


def recipe_views(recipe: str, local_crops: int = 6) -> list[View]:
    """The views of SimCLR or DINO (with `local_crops` 96 px views)."""
    if recipe == "simclr":
        view = View(224, (0.08, 1.0), Image.Resampling.BILINEAR, (0.8, 0.8, 0.8, 0.2), 0.5)
        return [view, view]
    if recipe == "dino":
        bicubic, jitter = Image.Resampling.BICUBIC, (0.4, 0.4, 0.2, 0.1)
        return [View(224, (0.4, 1.0), bicubic, jitter, 1.0),
                View(224, (0.4, 1.0), bicubic, jitter, 0.1, solarize_p=0.2),
                *[View(96, (0.05, 0.4), bicubic, jitter, 0.5)] * local_crops]
    raise ValueError(f"unknown recipe {recipe!r}: simclr or dino")


class JpegFolder(Dataset):
    """DIR/train/*.jpg, each item `(views, 0)` as an `ImageFolder` with one class."""

    def __init__(self, path: str, views: list[View]) -> None:
        self.files = sorted(glob.glob(os.path.join(path, "train", "*.jpg")))
        if not self.files:
            raise SystemExit(f"no {path}/train/*.jpg: make them with bench/jpeg_folder.py")
        self.views = views

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        with open(self.files[index], "rb") as f:  # torchvision's pil_loader
            img = Image.open(f).convert("RGB")
        return [view(img) for view in self.views], 0


def endless(loader: DataLoader) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", required=True, help="folder holding train/*.jpg")
    p.add_argument("--recipe", choices=["simclr", "dino"], required=True)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="timed batches")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--workers", type=int, default=1, help="DataLoader num_workers (0: main)")
    p.add_argument("--local_crops", type=int, default=6, help="DINO's 96 px views")
    args = p.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    dataset = JpegFolder(args.path, recipe_views(args.recipe, args.local_crops))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        drop_last=True)
    if len(loader) == 0:
        raise SystemExit(f"{len(dataset)} images make no batch of {args.batch_size}")
    batches = endless(loader)
    for _ in range(args.warmup):
        views, _ = next(batches)
    start = time.perf_counter()
    for _ in range(args.batches):
        views, _ = next(batches)
    seconds = time.perf_counter() - start
    images_per_s = args.batches * args.batch_size / seconds
    result = {
        "benchmark": f"peer_input_{args.recipe}", "torch": torch.__version__,
        "workers": args.workers, "batch_size": args.batch_size,
        "views": [list(v.shape[2:]) for v in views], "batches": args.batches,
        "seconds": seconds, "images_per_s": images_per_s,
        "images_per_s_per_core": images_per_s / max(1, args.workers),
    }
    print(json.dumps(result))
    print(f"PyTorch input {args.recipe}, {len(views)} views {[v[0] for v in result['views']]} "
          f"px, batch {args.batch_size}: {images_per_s:.1f} images/s, "
          f"{result['images_per_s_per_core']:.1f} images/s per core ({args.workers} workers, "
          f"torch {torch.__version__})")


if __name__ == "__main__":
    main()
