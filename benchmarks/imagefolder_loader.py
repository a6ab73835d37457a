"""Image-folder loading speed: ndkd's ImageFolderLoader against torchvision's ImageFolder + transforms.

Writes ``--images`` JPEGs (``--width`` x ``--height``, 4 classes) to a temporary folder, then times one
training epoch (RandomResizedCrop(``--size``) + flip) and one evaluation epoch (Resize + CenterCrop)
of each, with the same batch size and worker count. The baseline is torchvision's standard pipeline
(``datasets.ImageFolder``, ``transforms.Compose``, float tensors normalised in the workers); ndkd decodes
to uint8 in the workers, seeds every view by (seed, epoch, image) and normalises batches in the main
process. Reported: images/s of both and ours / torchvision.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _write_images(root: Path, count: int, width: int, height: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index in range(count):
            folder = root / split / f"class_{index % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)


def _rate(loader) -> float:
    started = time.perf_counter()
    count = sum(images.shape[0] for images, _ in loader)
    return count / (time.perf_counter() - started)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks imagefolder_loader")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from torchvision import datasets, transforms

    from ndkd.config import DataConfig, ImageFolderConfig
    from ndkd.data import load_dataset, make_loader

    results: dict = {"images": args.images, "image": f"{args.width}x{args.height}", "size": args.size,
                     "batch_size": args.batch_size, "workers": args.workers, "threads": torch.get_num_threads()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_images(root, args.images, args.width, args.height)
        folder = ImageFolderConfig(image_size=args.size, resize_size=round(args.size * 256 / 224), num_workers=args.workers)
        config = DataConfig(dataset="imagefolder", root=str(root), batch_size=args.batch_size, eval_batch_size=args.batch_size, imagefolder=folder)
        normalise = transforms.Normalize(folder.mean, folder.std)
        baseline_transforms = {
            "train": transforms.Compose([transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalise]),
            "eval": transforms.Compose([transforms.Resize(folder.resize_size), transforms.CenterCrop(args.size), transforms.ToTensor(), normalise]),
        }  # fmt: skip
        for phase, train in (("train", True), ("eval", False)):
            dataset = load_dataset(config, train=train)
            ours = make_loader(dataset, config, train=train, device=torch.device("cpu"))
            reference = torch.utils.data.DataLoader(
                datasets.ImageFolder(str(root / ("train" if train else "val")), baseline_transforms[phase]),
                batch_size=args.batch_size, shuffle=train, num_workers=args.workers, persistent_workers=args.workers > 0,
            )  # fmt: skip
            _rate(ours), _rate(reference)  # warm-up: worker start, file cache
            ours_rate, reference_rate = _rate(ours), _rate(reference)
            results[phase] = {
                "ndkd_images_per_s": round(ours_rate, 1),
                "torchvision_images_per_s": round(reference_rate, 1),
                "ratio_ndkd_over_torchvision": round(ours_rate / reference_rate, 3),
            }
    return results
