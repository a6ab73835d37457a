"""End-to-end training epoch including data: ndkd's in-memory batched pipeline vs a conventional one.

Both train the same resnet56 -> resnet20 KD distiller with ndkd's ``training_step`` on the same
CIFAR-100-format files, written by the benchmark (random images in the python-pickle layout). Only
the data path differs:

* ndkd: the uint8 images held on the device, each batch gathered, randomly cropped, flipped and
  normalised with a few tensor operations (``InMemoryLoader``);
* conventional: torchvision's ``CIFAR100`` dataset with PIL transforms (RandomCrop(32, 4),
  RandomHorizontalFlip, ToTensor, Normalize) in a ``DataLoader`` with worker processes.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import machine, ratio


def write_cifar100(root: Path, train_images: int) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in (("train", train_images), ("test", 100)):
        payload = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "fine_labels": [int(x) for x in rng.integers(0, 100, count)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, handle, protocol=2)


def conventional_loader(root: Path, batch: int, workers: int):
    from torchvision import datasets, transforms

    from ndkd.data.datasets import NORMALISATION

    class LocalCIFAR100(datasets.CIFAR100):
        """torchvision's CIFAR-100 reader without the official checksums (the files are the benchmark's own)."""

        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = [f"c{i}" for i in range(100)]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    mean, std = NORMALISATION["cifar100"]
    transform = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    dataset = LocalCIFAR100(str(root), train=True, transform=transform, download=False)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def build_distiller():
    from ndkd.config import DistillConfig
    from ndkd.distillers import build_distiller as build
    from ndkd.models import create_model

    torch.manual_seed(0)
    teacher = create_model("resnet56", num_classes=100).eval()
    distiller = build(DistillConfig(method="kd", options={"temperature": 4.0}), create_model("resnet20", num_classes=100), teacher)
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.05, momentum=0.9)
    return distiller.train(), optimizer


def run_epoch(batches, distiller, optimizer) -> tuple[float, int]:
    from ndkd.engine.trainer import training_step

    seen = 0
    started = time.perf_counter()
    for images, labels in batches:
        training_step(distiller, optimizer, images, labels, epoch=1)
        seen += labels.shape[0]
    return time.perf_counter() - started, seen


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks epoch", description=__doc__)
    parser.add_argument("--images", type=int, default=5000, help="training images in the generated CIFAR-100 files")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional pipeline")
    args = parser.parse_args(argv)
    from ndkd.config import DataConfig
    from ndkd.data import load_dataset, make_loader

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_cifar100(root, args.images)
        config = DataConfig(dataset="cifar100", root=str(root), batch_size=args.batch)
        ours_loader = make_loader(load_dataset(config, train=True), config, train=True, device=torch.device("cpu"))
        baseline_loader = conventional_loader(root, args.batch, args.workers)
        # one short pass of each first: worker start-up, allocator and kernel warm-up are not epoch time
        distiller, optimizer = build_distiller()
        for loader in (ours_loader, baseline_loader):
            for step, (images, labels) in enumerate(loader):
                if step == 2:
                    break
        ours_seconds, ours_seen = run_epoch(ours_loader, distiller, optimizer)
        distiller, optimizer = build_distiller()
        baseline_seconds, baseline_seen = run_epoch(baseline_loader, distiller, optimizer)
    ours_rate, baseline_rate = ours_seen / ours_seconds, baseline_seen / baseline_seconds
    return {
        "benchmark": "one training epoch incl. data, resnet56 -> resnet20 KD, fp32",
        "machine": machine(),
        "images": args.images,
        "batch": args.batch,
        "ndkd_images_per_s": round(ours_rate, 1),
        "conventional_images_per_s": round(baseline_rate, 1),
        "conventional_workers": args.workers,
        "speedup": ratio(1 / baseline_rate, 1 / ours_rate),
    }
