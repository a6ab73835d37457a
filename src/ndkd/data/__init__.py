"""Datasets and loaders: ``load_dataset`` reads a split (into memory, or an image folder's file list),
``make_loader`` batches it."""

from __future__ import annotations

import torch

from ndkd.config import DataConfig
from ndkd.data.datasets import ImageDataset, load_cifar, load_fashion_mnist, make_synthetic, read_idx
from ndkd.data.imagefolder import ImageFolderDataset, ImageFolderLoader, load_image_folder
from ndkd.data.loader import InMemoryLoader, random_crop_flip


def load_dataset(config: DataConfig, train: bool, seed: int | None = None) -> ImageDataset | ImageFolderDataset:
    """The train or test split named by ``config.dataset`` (``train_subset`` applied).

    ``seed`` (default ``config.seed``) seeds the synthetic images and the ``train_subset`` draw.

    In-memory datasets hold their images; an image folder (``imagefolder``: test split = ``val_dir``)
    holds its file list and decodes images in loader workers.
    """
    seed = config.seed if seed is None else seed
    if config.dataset == "imagefolder":
        dataset = load_image_folder(config.root, config.imagefolder, train)
    elif config.dataset == "fashion_mnist":
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
    dataset: ImageDataset | ImageFolderDataset,
    config: DataConfig,
    *,
    train: bool,
    device: torch.device,
    seed: int = 0,
    augment: bool | None = None,
    shuffle: bool | None = None,
    batch_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
) -> InMemoryLoader | ImageFolderLoader:
    """Loader for ``dataset`` with the batch size and augmentation of ``config`` (this process's shard).

    ``batch_size`` (the global batch) overrides ``config``'s; ``shuffle`` defaults to ``train``.
    """
    batch_size = batch_size or (config.batch_size if train else config.eval_batch_size)
    augment = config.augment if augment is None else augment
    if isinstance(dataset, ImageFolderDataset):
        return ImageFolderLoader(
            dataset, batch_size, train=train, device=device, seed=seed, augment=augment, hflip=config.hflip,
            shuffle=shuffle, rank=rank, world_size=world_size, channels_last=channels_last,
        )  # fmt: skip
    return InMemoryLoader(
        dataset,
        batch_size,
        train=train,
        device=device,
        seed=seed,
        augment=augment,
        crop_padding=config.crop_padding,
        hflip=config.hflip,
        shuffle=shuffle,
        rank=rank,
        world_size=world_size,
        channels_last=channels_last,
    )


__all__ = [
    "ImageDataset",
    "ImageFolderDataset",
    "ImageFolderLoader",
    "InMemoryLoader",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "make_loader",
    "make_synthetic",
    "random_crop_flip",
    "read_idx",
]
