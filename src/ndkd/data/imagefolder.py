"""Any image-folder dataset (``data.dataset: imagefolder``): ImageNet's layout or a user's own data.

``data.root`` holds ``train/`` and ``val/`` (names configurable), each with one subfolder per class.
Class indices follow the sorted class folders of the training split, so both splits agree. Images are
decoded in DataLoader worker processes (PIL; grey, palette and RGBA images converted to RGB, or all
to grey for ``channels: 1``) and come out as uint8 crops; the main process moves each batch to the
device (pinned memory on CUDA) and normalises it there.

Transforms are the standard ImageNet ones: training views are a RandomResizedCrop of ``image_size``
(area fraction in [min_scale, 1], aspect ratio in [3/4, 4/3]) plus a horizontal flip; evaluation views
resize the shorter side to ``resize_size`` and centre-crop ``image_size``. Every random draw of a
training view comes from a generator seeded by (seed, epoch, image index) and the epoch order from
one seeded by (seed, epoch), as in :class:`~ndkd.data.loader.InMemoryLoader`: an epoch is a pure
function of its number whatever the worker count or the number of processes, so a resumed run replays it
exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ndkd.data.loader import InMemoryLoader
from ndkd.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
_ASPECT_RATIOS = (3 / 4, 4 / 3)


@dataclass
class ImageFolderDataset:
    """The files of one split: ``files[i]`` has label ``labels[i]`` (int64 [N]) in ``class_names`` order."""

    name: str
    root: Path
    files: list[str]
    labels: torch.Tensor
    class_names: list[str]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    settings: dict = field(default_factory=dict)  # resize_size, min_scale, num_workers, pin_memory

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def subset(self, count: int, seed: int) -> "ImageFolderDataset":
        """``count`` files drawn without replacement by a seeded permutation (same seed, same subset)."""
        if count >= len(self):
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        return ImageFolderDataset(
            self.name, self.root, [self.files[i] for i in keep.tolist()], self.labels[keep], self.class_names,
            self.channels, self.image_size, self.mean, self.std, self.settings,
        )  # fmt: skip


def _class_folders(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir} does not exist: data.root must hold train/ and val/ folders (data.imagefolder.train_dir "
            "and val_dir), each with one subfolder of images per class"
        )
    names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise DataError(f"{split_dir} has no class subfolders; put the images of each class in their own folder")
    return names


def _images_under(folder: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs.sort()
        found += [os.path.join(directory, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def load_image_folder(root: str | None, settings, train: bool) -> ImageFolderDataset:
    """Scan the train or val split of ``root`` (``settings``: :class:`~ndkd.config.ImageFolderConfig`)."""
    if root is None:
        raise DataError("data.dataset 'imagefolder' needs data.root: the folder that holds train/ and val/")
    base = Path(root).expanduser()
    class_names = _class_folders(base / settings.train_dir)  # class indices always come from the training split
    split_dir = base / (settings.train_dir if train else settings.val_dir)
    split_classes = _class_folders(split_dir)
    unknown = sorted(set(split_classes) - set(class_names))
    if unknown:
        raise DataError(f"{split_dir} has class folders that {base / settings.train_dir} lacks: {', '.join(unknown[:5])}")
    files, labels, empty = [], [], []
    for index, name in enumerate(class_names):
        images = _images_under(split_dir / name) if name in split_classes else []
        if not images and train:
            empty.append(name)
        files += images
        labels += [index] * len(images)
    if empty:
        raise DataError(f"class folder(s) without images ({', '.join(IMAGE_EXTENSIONS)}) in {split_dir}: {', '.join(empty[:5])}")
    if not files:
        raise DataError(f"{split_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    extra = {
        "resize_size": settings.resize_size, "min_scale": settings.min_scale,
        "num_workers": settings.num_workers, "pin_memory": settings.pin_memory,
    }  # fmt: skip
    return ImageFolderDataset(
        "imagefolder", split_dir, files, torch.tensor(labels, dtype=torch.int64), class_names, settings.channels,
        settings.image_size, tuple(settings.mean), tuple(settings.std), extra,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ transforms


def random_resized_box(height: int, width: int, min_scale: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering a fraction U(min_scale, 1) of the area with a log-uniform
    aspect ratio in [3/4, 4/3]; after 10 rejected draws, the largest centred crop within those ratios."""
    area = height * width
    log_low, log_high = math.log(_ASPECT_RATIOS[0]), math.log(_ASPECT_RATIOS[1])
    for _ in range(10):
        scale_draw, ratio_draw = torch.rand(2, generator=generator).tolist()
        target_area = area * (min_scale + (1.0 - min_scale) * scale_draw)
        aspect = math.exp(log_low + (log_high - log_low) * ratio_draw)
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    aspect = width / height
    if aspect < _ASPECT_RATIOS[0]:
        w, h = width, round(width / _ASPECT_RATIOS[0])
    elif aspect > _ASPECT_RATIOS[1]:
        w, h = round(height * _ASPECT_RATIOS[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class _Views(Dataset):
    """``views[(index, epoch)]`` -> (uint8 [C, S, S] view of image ``index``, its label)."""

    def __init__(self, dataset: ImageFolderDataset, random_views: bool, hflip: bool, seed: int) -> None:
        self.dataset = dataset
        self.random_views = random_views
        self.hflip = hflip
        self.seed = seed
        self.labels = dataset.labels.tolist()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision.transforms import functional as TF

        index, epoch = key
        path = self.dataset.files[index]
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGB" if self.dataset.channels == 3 else "L")
        except OSError as error:
            raise DataError(f"cannot read image {path}: {error}") from error
        size = self.dataset.image_size
        if self.random_views:
            generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % (1 << 63))
            top, left, h, w = random_resized_box(image.height, image.width, self.dataset.settings["min_scale"], generator)
            image = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
            if self.hflip and torch.rand(1, generator=generator).item() < 0.5:
                image = TF.hflip(image)
        else:
            image = TF.center_crop(TF.resize(image, self.dataset.settings["resize_size"], antialias=True), [size, size])
        return TF.pil_to_tensor(image), self.labels[index]


class _EpochKeys:
    """This process's batches of (index, epoch) keys for the loader's current epoch (empty parts skipped)."""

    def __init__(self, loader: "ImageFolderLoader") -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        loader = self.loader
        if loader.shuffle:
            generator = torch.Generator().manual_seed(loader.seed * 1_000_003 + loader.epoch)
            order = torch.randperm(len(loader.dataset), generator=generator).tolist()
        else:
            order = list(range(len(loader.dataset)))
        for start, stop in loader.batch_bounds():
            part = order[start:stop][loader.local_slice(stop - start)]
            if part:
                yield [(index, loader.epoch) for index in part]


class ImageFolderLoader:
    """Iterate over ``(images float [B, C, S, S] normalised, labels int64 [B])`` on ``device``.

    The interface and the batching rules of :class:`~ndkd.data.loader.InMemoryLoader` (whose
    ``batch_bounds`` and ``local_slice`` it shares): ``batch_size`` is the global batch, every process
    draws the same epoch order and keeps its own contiguous slice of each global batch
    (``rank``/``world_size``), so the processes' batches together are the single-process batch.
    """

    batch_bounds = InMemoryLoader.batch_bounds
    local_slice = InMemoryLoader.local_slice

    def __init__(
        self, dataset: ImageFolderDataset, batch_size: int, *, train: bool, device: torch.device | str = "cpu",
        seed: int = 0, augment: bool = True, hflip: bool = True, shuffle: bool | None = None,
        num_workers: int | None = None, rank: int = 0, world_size: int = 1, channels_last: bool = False,
    ) -> None:  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.dataset, self.batch_size, self.train, self.seed, self.epoch = dataset, batch_size, train, seed, 0
        self.shuffle = train if shuffle is None else shuffle
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        workers = dataset.settings.get("num_workers", 0) if num_workers is None else num_workers
        workers = min(workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        pin = bool(dataset.settings.get("pin_memory", True)) and self.device.type == "cuda"
        self.loader = DataLoader(
            _Views(dataset, train and augment, hflip, seed), batch_sampler=_EpochKeys(self), num_workers=workers,
            pin_memory=pin, persistent_workers=workers > 0,
        )  # fmt: skip
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(dataset.mean, device=self.device).view(shape) * 255.0
        self.inv_std = 1.0 / (torch.tensor(dataset.std, device=self.device).view(shape) * 255.0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batch_bounds())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            normalised = ((images.float() - self.mean) * self.inv_std).contiguous(memory_format=self.memory_format)
            yield normalised, labels.to(self.device, non_blocking=True)
