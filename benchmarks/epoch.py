"""End-to-end training epoch including data: ndkd's in-memory batched pipeline vs a conventional one.

Both train the same resnet56 -> resnet20 KD distiller with ndkd's ``training_step`` on the same
CIFAR-100-format files, written by the benchmark (random images in the python-pickle layout). Only
the data path differs:

* ndkd: the uint8 images held on the device, each batch gathered, randomly cropped, flipped and
  normalised with a few tensor operations (``InMemoryLoader``);
* conventional: torchvision's ``CIFAR100`` dataset with PIL transforms (RandomCrop(32, 4),
  RandomHorizontalFlip, ToTensor, Normalize) in a ``DataLoader`` with worker processes.

Reported: the data pipeline alone (images/s of one pass without training), and whole training epochs
of each pipeline, interleaved ``--repeats`` times (best of each), after a warm-up of a few steps.
On a CPU the training step dominates and both pipelines end up close; the data-only figure says how
fast a device must train before the conventional pipeline becomes the bottleneck.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import machine


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


def build_distiller(channels_last: bool):
    from ndkd.config import DistillConfig, SpeedConfig
    from ndkd.distillers import build_distiller as build
    from ndkd.engine.acceleration import apply_speed_switches
    from ndkd.models import create_model

    torch.manual_seed(0)
    teacher = create_model("resnet56", num_classes=100).eval()
    distiller = build(DistillConfig(method="kd", options={"temperature": 4.0}), create_model("resnet20", num_classes=100), teacher)
    apply_speed_switches(distiller, SpeedConfig(channels_last=channels_last), torch.device("cpu"))
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.05, momentum=0.9)
    return distiller.train(), optimizer


def run_epoch(loader, channels_last: bool, max_steps: int | None = None) -> tuple[float, int]:
    """Images/s of training steps over one pass of ``loader`` (a fresh, identical distiller each time)."""
    from ndkd.engine.trainer import training_step

    distiller, optimizer = build_distiller(channels_last)
    seen = 0
    started = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        if max_steps is not None and step == max_steps:
            break
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        training_step(distiller, optimizer, images, labels, epoch=1)
        seen += labels.shape[0]
    return seen / (time.perf_counter() - started)


def data_only(loader) -> float:
    """Images/s of the data pipeline alone: one pass, batches produced and discarded."""
    seen = 0
    started = time.perf_counter()
    for _, labels in loader:
        seen += labels.shape[0]
    return seen / (time.perf_counter() - started)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks epoch", description=__doc__)
    parser.add_argument("--images", type=int, default=5000, help="training images in the generated CIFAR-100 files")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional pipeline")
    parser.add_argument("--repeats", type=int, default=2, help="epochs of each pipeline, interleaved; the best is reported")
    parser.add_argument("--channels-last", action="store_true", help="both pipelines train in channels_last (same fp32 math)")
    args = parser.parse_args(argv)
    from ndkd.config import DataConfig
    from ndkd.data import load_dataset, make_loader

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_cifar100(root, args.images)
        config = DataConfig(dataset="cifar100", root=str(root), batch_size=args.batch)
        loaders = {
            "ndkd": make_loader(load_dataset(config, train=True), config, train=True, device=torch.device("cpu")),
            "conventional": conventional_loader(root, args.batch, args.workers),
        }
        # warm-up: worker start-up, allocator and kernel selection are not epoch time
        for loader in loaders.values():
            run_epoch(loader, args.channels_last, max_steps=3)
        data = {name: data_only(loader) for name, loader in loaders.items()}
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
            for name, loader in loaders.items():
                rates[name].append(run_epoch(loader, args.channels_last))
    ours, baseline = max(rates["ndkd"]), max(rates["conventional"])
    return {
        "benchmark": f"one training epoch incl. data, resnet56 -> resnet20 KD, fp32{' channels_last' if args.channels_last else ''}",
        "machine": machine(),
        "images": args.images,
        "batch": args.batch,
        "conventional_workers": args.workers,
        "data_only_images_per_s": {name: round(rate, 1) for name, rate in data.items()},
        "data_only_speedup": round(data["ndkd"] / data["conventional"], 2),
        "epoch_images_per_s": {name: [round(rate, 1) for rate in values] for name, values in rates.items()},
        "ndkd_images_per_s": round(ours, 1),
        "conventional_images_per_s": round(baseline, 1),
        "speedup": round(ours / baseline, 2),
    }
