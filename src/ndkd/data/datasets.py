"""Datasets held in memory as uint8 tensors: Fashion-MNIST (IDX), CIFAR-10/100 (python pickles), synthetic.

Each loader returns an :class:`ImageDataset` with images [N, C, H, W] uint8 and labels [N] int64. Files are
read from disk only; a download happens only when the user allows it (``data.download: true``).
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ndkd.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# Normalisation constants: Fashion-MNIST train-set statistics; CIFAR values as in the standard
# distillation benchmark code, so shared teachers see the inputs they were trained on.
NORMALISATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


@dataclass
class ImageDataset:
    """A labelled image dataset in memory: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N]."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"{self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise DataError(f"{self.name}: labels must lie in [0, {self.num_classes}), found {int(self.labels.min())}..{int(self.labels.max())}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, count: int, seed: int) -> "ImageDataset":
        """``count`` samples drawn without replacement by a seeded permutation (same seed, same subset)."""
        if count >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(self), generator=generator)[:count].sort().values
        return ImageDataset(self.name, self.images[keep], self.labels[keep], self.num_classes, self.mean, self.std, self.class_names)


# ---------------------------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but the file holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_folders(root: str | None) -> list[Path]:
    if root is None:
        env = os.environ.get("NDKD_DATA")
        roots = [Path(env)] if env else []
        roots.append(DEBIAN_FASHION_MNIST)
    else:
        roots = [Path(root).expanduser()]
    folders = []
    for base in roots:
        folders += [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]
    return folders


def load_fashion_mnist(root: str | None, train: bool, download: bool = False) -> ImageDataset:
    """Fashion-MNIST from IDX files in ``root`` (or $NDKD_DATA, or Debian's dataset-fashion-mnist)."""
    prefix = "train" if train else "t10k"
    folders = _fashion_mnist_folders(root)
    for folder in folders:
        images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images_path and labels_path:
            break
    else:
        if download:
            return _download_fashion_mnist(root, train)
        looked = ", ".join(str(f) for f in folders)
        raise DataError(
            f"Fashion-MNIST {prefix} files not found (looked in {looked}). Install Debian's package "
            "'dataset-fashion-mnist' (sudo apt-get install dataset-fashion-mnist), set data.root to a folder "
            "holding the IDX files, or set data.download=true to fetch them with torchvision"
        )
    images = torch.from_numpy(read_idx(images_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
    mean, std = NORMALISATION["fashion_mnist"]
    return ImageDataset("fashion_mnist", images, labels, 10, mean, std, list(FASHION_MNIST_CLASSES))


def _download_fashion_mnist(root: str | None, train: bool) -> ImageDataset:
    from torchvision.datasets import FashionMNIST

    target = Path(root or os.environ.get("NDKD_DATA") or Path.home() / ".cache" / "ndkd").expanduser()
    try:
        FashionMNIST(str(target), train=train, download=True)
    except Exception as error:
        raise DataError(f"downloading Fashion-MNIST into {target} failed: {error}") from error
    return load_fashion_mnist(str(target), train, download=False)


# --------------------------------------------------------------------------------------------- CIFAR

_CIFAR_LAYOUT = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names"),
    100: ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds only plain containers and numpy arrays; any other class is refused.

    The CIFAR python files are pickles; this keeps reading them from executing arbitrary code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            payload = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path} is not a CIFAR python batch file: {error}") from error
    if not isinstance(payload, dict):
        raise DataError(f"{path} is not a CIFAR python batch file (no dict inside)")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in payload.items()}


def load_cifar(root: str | None, num_classes: int, train: bool) -> ImageDataset:
    """CIFAR-10/100 from the standard python-pickle folder (``cifar-10-batches-py`` / ``cifar-100-python``)."""
    folder_name, train_files, test_files, meta_file, label_key, names_key = _CIFAR_LAYOUT[num_classes]
    name = f"cifar{num_classes}"
    base = Path(root or os.environ.get("NDKD_DATA") or ".").expanduser()
    folder = base if (base / (train_files[0])).is_file() else base / folder_name
    files = [folder / f for f in (train_files if train else test_files)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"{name} files not found: {', '.join(missing)}. Set data.root to the folder that contains "
            f"{folder_name}/ (the python version of the dataset from the CIFAR website)"
        )
    images, labels = [], []
    for path in files:
        batch = _read_cifar_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path} lacks the 'data' or '{label_key}' entry of a {name} batch file")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    class_names: list[str] = []
    if (folder / meta_file).is_file():
        meta = _read_cifar_pickle(folder / meta_file)
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    mean, std = NORMALISATION[name]
    return ImageDataset(
        name, torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), num_classes, mean, std, class_names
    )


# ----------------------------------------------------------------------------------------- synthetic


def make_synthetic(
    num_samples: int, num_classes: int, image_size: int, channels: int, seed: int, train: bool, noise: float = 48.0
) -> ImageDataset:
    """A learnable toy dataset: each class is a fixed random smooth template plus per-image noise.

    The templates depend only on ``seed``, so the train and test splits share them; the samples of each
    split come from their own generator. Images are uint8 like the real datasets.
    """
    template_gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=template_gen) * 255.0
    templates = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    sample_gen = torch.Generator().manual_seed(2 * seed + (0 if train else 1) + 1)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=sample_gen)]
    images = templates[labels] + noise * torch.randn(num_samples, channels, image_size, image_size, generator=sample_gen)
    images = images.round().clamp(0, 255).to(torch.uint8)
    names = [f"class_{k}" for k in range(num_classes)]
    return ImageDataset("synthetic", images, labels, num_classes, (0.5,) * channels, (0.25,) * channels, names)
