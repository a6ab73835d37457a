"""Teacher class-means: compute them in one streaming pass, store them as safetensors, load them back.

c_k is the plain mean of the teacher's embeddings (the input of its final Linear) over the training
images of class k, with the teacher in eval mode. The official KD++ code averages one
training-augmented view of each image; ``augment=False`` averages the clean images instead. Files
carry metadata (teacher, checkpoint hash, dataset, K, D, augmentation) so a file made for another
teacher is caught before training; the official JSON format ({"<class>": [D floats]}) is read too.
"""

from __future__ import annotations

import json
from pathlib import Path
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save
from torch import nn

from ndkd.data.datasets import ImageDataset
from ndkd.data.loader import InMemoryLoader
from ndkd.engine.checkpoint import atomic_write_bytes
from ndkd.errors import ClassMeansError
from ndkd.engine.runtime import Runtime
from ndkd.models.features import FeatureTap, embedding_dim

TENSOR_NAME = "class_means"


@torch.no_grad()
def compute_class_means(
    teacher: nn.Module,
    dataset: ImageDataset,
    *,
    augment: bool = True,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    seed: int = 0,
    crop_padding: int = 4,
    hflip: bool = True,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """Class-means [K, D] (float32) of ``teacher``'s embeddings over ``dataset``, in one streaming pass.

    The teacher runs in eval mode. With ``augment`` each image is seen once under the training
    augmentation (pad-and-crop by ``crop_padding``, flip), drawn from ``seed``; otherwise clean.
    Sums are accumulated in float64 with ``index_add_`` (no per-sample Python work). A class with no
    sample is refused before the pass. Under DDP (``runtime`` of several processes) each process
    embeds its part of every batch and the sums are all-reduced: the result equals the single-process one.
    """
    counts = torch.bincount(dataset.labels, minlength=dataset.num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ClassMeansError(
            f"class(es) {empty} have no training sample, so their class-mean is undefined; "
            "use the full training set or a larger data.train_subset"
        )
    if device is None:
        device = next(teacher.parameters()).device
    rank, world_size = (runtime.rank, runtime.world_size) if runtime is not None else (0, 1)
    loader = InMemoryLoader(
        dataset, batch_size, train=True, shuffle=False, augment=augment, device=device, seed=seed,
        crop_padding=crop_padding, hflip=hflip, rank=rank, world_size=world_size,
    )  # fmt: skip
    was_training = teacher.training
    teacher.eval()
    tap = FeatureTap(teacher)
    sums = torch.zeros(dataset.num_classes, embedding_dim(teacher), dtype=torch.float64, device=device)
    try:
        for images, labels in loader:
            sums.index_add_(0, labels, tap(images).embedding.double())
    finally:
        tap.remove()
        teacher.train(was_training)
    if runtime is not None:
        runtime.all_reduce_sum(sums)
    return (sums / counts.to(sums)[:, None]).float()


def save_class_means(path: str | Path, class_means: torch.Tensor, counts: torch.Tensor | None = None, **metadata: object) -> None:
    """Write class-means [K, D] (and counts) to a safetensors file with string metadata."""
    tensors = {TENSOR_NAME: class_means.detach().float().cpu().contiguous()}
    if counts is not None:
        tensors["counts"] = counts.detach().long().cpu().contiguous()
    info = {key: str(value) for key, value in metadata.items()}
    info.update(num_classes=str(class_means.shape[0]), dim=str(class_means.shape[1]))
    atomic_write_bytes(save(tensors, metadata=info), path)


def read_class_means_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors class-means file ({} for the official JSON format)."""
    path = Path(path)
    if path.suffix == ".json":
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ClassMeansError(f"cannot read class-means file {str(path)!r}: {error}") from error


def _load_official_json(path: Path) -> torch.Tensor:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ClassMeansError(f"cannot read class-means JSON {str(path)!r}: {error}") from error
    if not isinstance(data, dict) or not data:
        raise ClassMeansError(f"{str(path)!r} must hold an object {{\"<class index>\": [D floats]}}")
    try:
        rows = {int(key): value for key, value in data.items()}
    except ValueError as error:
        raise ClassMeansError(f"{str(path)!r}: keys must be class indices, found {list(data)[:3]}") from error
    expected = list(range(len(rows)))
    if sorted(rows) != expected:
        raise ClassMeansError(f"{str(path)!r}: class indices must be 0..{len(rows) - 1} with none missing")
    widths = {len(value) for value in rows.values() if isinstance(value, list)}
    if len(widths) != 1 or not all(isinstance(value, list) for value in rows.values()):
        raise ClassMeansError(f"{str(path)!r}: every class must map to a list of the same length")
    return torch.tensor([rows[k] for k in expected], dtype=torch.float32)


def load_class_means(path: str | Path, num_classes: int | None = None, dim: int | None = None) -> torch.Tensor:
    """Class-means [K, D] float32 from our safetensors file or the official KD++ JSON (keys in any order).

    When ``num_classes`` or ``dim`` (the teacher's embedding width) is given, a mismatch is an error
    saying which one differs.
    """
    path = Path(path)
    if not path.is_file():
        raise ClassMeansError(f"class-means file {str(path)!r} does not exist; compute it with `ndkd centers CONFIG`")
    if path.suffix == ".json":
        class_means = _load_official_json(path)
    else:
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ClassMeansError(f"cannot read class-means file {str(path)!r}: {error}") from error
        if TENSOR_NAME not in tensors:
            raise ClassMeansError(f"{str(path)!r} holds no {TENSOR_NAME!r} tensor")
        class_means = tensors[TENSOR_NAME].float()
    if class_means.dim() != 2:
        raise ClassMeansError(f"{str(path)!r}: class-means must be a [K, D] matrix, got shape {tuple(class_means.shape)}")
    problems = []
    if num_classes is not None and class_means.shape[0] != num_classes:
        problems.append(f"{class_means.shape[0]} classes but the dataset has {num_classes}")
    if dim is not None and class_means.shape[1] != dim:
        problems.append(f"width {class_means.shape[1]} but the teacher's embedding has width {dim}")
    if problems:
        raise ClassMeansError(
            f"class-means file {str(path)!r} does not fit this teacher and dataset: {'; '.join(problems)}. "
            "Recompute it from this teacher with `ndkd centers CONFIG`"
        )
    if not torch.isfinite(class_means).all():
        raise ClassMeansError(f"{str(path)!r} contains NaN or infinite values")
    return class_means
