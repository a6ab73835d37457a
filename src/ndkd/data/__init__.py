"""Datasets and loaders: ``load_dataset`` reads a split into memory, ``make_loader`` batches it."""

from __future__ import annotations

import torch

from ndkd.config import DataConfig
from ndkd.data.datasets import ImageDataset, load_cifar, load_fashion_mnist, make_synthetic, read_idx
from ndkd.data.loader import InMemoryLoader, random_crop_flip


def load_dataset(config: DataConfig, train: bool, seed: int = 0) -> ImageDataset:
    """The train or test split named by ``config.dataset``, in memory (``train_subset`` applied)."""
    if config.dataset == "fashion_mnist":
        dataset = load_fashion_mnist(config.root, train, download=config.download)
    elif config.dataset in ("cifar10", "cifar100"):
        dataset = load_cifar(config.root, 10 if config.dataset == "cifar10" else 100, train)
    else:
        synthetic = config.synthetic
        dataset = make_synthetic(
            synthetic.num_train if train else synthetic.num_test,
            synthetic.num_classes,
            synthetic.image_size,
            synthetic.channels,
            seed=seed,
            train=train,
        )
    if train and config.train_subset is not None:
        dataset = dataset.subset(config.train_subset, seed=seed)
    return dataset


def make_loader(
    dataset: ImageDataset,
    config: DataConfig,
    *,
    train: bool,
    device: torch.device,
    seed: int = 0,
    augment: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
) -> InMemoryLoader:
    """Loader for ``dataset`` with the batch size and augmentation of ``config`` (this process's shard)."""
    return InMemoryLoader(
        dataset,
        config.batch_size if train else config.eval_batch_size,
        train=train,
        device=device,
        seed=seed,
        augment=config.augment if augment is None else augment,
        crop_padding=config.crop_padding,
        hflip=config.hflip,
        rank=rank,
        world_size=world_size,
        channels_last=channels_last,
    )


__all__ = [
    "ImageDataset",
    "InMemoryLoader",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "make_loader",
    "make_synthetic",
    "random_crop_flip",
    "read_idx",
]
