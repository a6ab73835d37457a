"""An in-memory batch loader that augments whole batches on the training device.

The uint8 images are moved to the device once. Each training epoch draws a permutation and the
augmentation (pad-and-random-crop, horizontal flip) from a generator seeded by (seed, epoch), so an
epoch is a pure function of its number: resuming after epoch k replays epoch k+1 exactly, and no
loader state has to be saved. Every sample is visited once per epoch; the last, smaller batch is kept,
except that a final training batch too small to give each process two samples is merged into the one
before it (BatchNorm cannot normalise one sample in training mode).

Under DDP, ``batch_size`` is the global batch: every process draws the same permutation and the same
augmentation of the whole global batch and keeps its own contiguous slice, so the union of the
processes' batches is exactly the single-process batch, whatever the number of processes.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ndkd.data.datasets import ImageDataset


def random_crop_flip(
    images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Zero-pad each image by ``padding``, crop it back at a random offset and flip half the batch.

    Same result as torchvision's RandomCrop(size, padding) + RandomHorizontalFlip() per image, done for
    the whole batch [B, C, H, W] with one gather (any dtype; uint8 in the loader).
    """
    batch, channels, height, width = images.shape
    device = images.device
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (batch,), device=device, generator=generator)
        left = torch.randint(0, 2 * padding + 1, (batch,), device=device, generator=generator)
        rows = (top[:, None] + torch.arange(height, device=device))[:, None, :, None]
        cols = (left[:, None] + torch.arange(width, device=device))[:, None, None, :]
        batch_index = torch.arange(batch, device=device)[:, None, None, None]
        channel_index = torch.arange(channels, device=device)[None, :, None, None]
        images = padded[batch_index, channel_index, rows, cols]
    if hflip:
        flip = torch.rand(batch, device=device, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


class InMemoryLoader:
    """Iterate over ``(images float [B, C, H, W] normalised, labels int64 [B])`` on ``device``.

    Args:
        dataset: the in-memory dataset.
        batch_size: samples per batch.
        train: shuffle and (if ``augment``) augment; evaluation batches come in order, unaugmented.
        device: where batches are produced (the dataset is copied there once).
        seed: base seed of the per-epoch generator.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        augment: bool = True,
        crop_padding: int = 4,
        hflip: bool = True,
        shuffle: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.shuffle = train if shuffle is None else shuffle
        self.augment = train and augment
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.seed = seed
        self.epoch = 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.rank, self.world_size = rank, world_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(dataset.mean, device=self.device).view(shape) * 255.0
        self.inv_std = 1.0 / (torch.tensor(dataset.std, device=self.device).view(shape) * 255.0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    def batch_bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of each global batch; a too-small trailing training batch joins the previous one."""
        total = len(self.dataset)
        bounds = [(start, min(start + self.batch_size, total)) for start in range(0, total, self.batch_size)]
        # training BatchNorm needs 2+ samples in every process's part of a batch
        smallest = 2 * self.world_size if self.train else 1
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < smallest:
            bounds[-2:] = [(bounds[-2][0], total)]
        return bounds

    def __len__(self) -> int:
        return len(self.batch_bounds())

    def local_slice(self, size: int) -> slice:
        """This process's contiguous part of a global batch of ``size`` samples (sizes differ by at most 1)."""
        base, extra = divmod(size, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def _generator(self) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return generator

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float, (x / 255 - mean) / std, in the loader's memory format."""
        return ((images.float() - self.mean) * self.inv_std).contiguous(memory_format=self.memory_format)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = self._generator()
        total = len(self.dataset)
        order = torch.randperm(total, device=self.device, generator=generator) if self.shuffle else None
        for start, stop in self.batch_bounds():
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                images, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
            if self.augment:
                images = random_crop_flip(images, self.crop_padding, self.hflip, generator)
            if self.world_size > 1:
                part = self.local_slice(stop - start)
                images, labels = images[part], labels[part]
            yield self.normalise(images), labels
