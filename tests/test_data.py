"""Datasets on disk (IDX, CIFAR pickles), the synthetic set, and the batched in-memory loader."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from ndkd.config import DataConfig
from ndkd.data import InMemoryLoader, load_dataset, make_synthetic, random_crop_flip, read_idx
from ndkd.errors import DataError


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files_from_data_root(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, count in (("train", 12), ("t10k", 5)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28)), compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 10, compress)
    train = load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path)), train=True)
    test = load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path)), train=False)
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 1, 2, 3, 4]
    expected = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert torch.equal(train.images[:, 0], torch.from_numpy(expected.copy()))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path / "nowhere")), train=True)
    message = str(caught.value)
    assert "Fashion-MNIST train files not found" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message


def test_corrupt_idx_is_reported(tmp_path):
    (tmp_path / "x-idx").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(DataError, match="header says"):
        read_idx(tmp_path / "x-idx")


def _write_cifar(root, num_classes, train_count=6, test_count=4):
    rng = np.random.default_rng(num_classes)
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
        label_key, meta = b"labels", ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir()
        names = ["train"]
        label_key, meta = b"fine_labels", ("meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    arrays = {}
    for name in names + ["test_batch" if num_classes == 10 else "test"]:
        count = test_count if name.startswith("test") else train_count
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, num_classes, count))
        arrays[name] = (data, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, label_key: [int(x) for x in labels], b"batch_label": b"x"}, handle, protocol=2)
    with open(folder / meta[0], "wb") as handle:
        pickle.dump(meta[1], handle, protocol=2)
    return arrays


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_python_layout_loads(tmp_path, num_classes):
    arrays = _write_cifar(tmp_path, num_classes)
    name = f"cifar{num_classes}"
    train = load_dataset(DataConfig(dataset=name, root=str(tmp_path)), train=True)
    test = load_dataset(DataConfig(dataset=name, root=str(tmp_path)), train=False)
    batches = [k for k in arrays if not k.startswith("test")]
    assert len(train) == 6 * len(batches) and len(test) == 4
    first = arrays[batches[0]][0][0]
    # row-major 3072 bytes = 1024 red, 1024 green, 1024 blue
    assert torch.equal(train.images[0], torch.from_numpy(first.reshape(3, 32, 32)))
    assert train.class_names[:2] == ["c0", "c1"] and train.num_classes == num_classes


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    for name in ("train", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": Evil(), b"fine_labels": [0]}, handle)
    with pytest.raises(DataError, match="refusing to load builtins.eval"):
        load_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)), train=True)


def test_missing_cifar_names_the_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 files not found: .*data_batch_1.*Set data.root"):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), train=True)


def reference_crop_flip(images, top, left, flip, padding):
    """Per-image pad + crop + flip, as torchvision's RandomCrop(padding) and RandomHorizontalFlip do."""
    out = []
    for image, y, x, f in zip(images, top.tolist(), left.tolist(), flip.tolist()):
        padded = torch.zeros(image.shape[0], image.shape[1] + 2 * padding, image.shape[2] + 2 * padding, dtype=image.dtype)
        padded[:, padding : padding + image.shape[1], padding : padding + image.shape[2]] = image
        crop = padded[:, y : y + image.shape[1], x : x + image.shape[2]]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


def test_batched_crop_flip_equals_per_image_reference():
    images = torch.randint(0, 256, (16, 3, 10, 9), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(5)
    ours = random_crop_flip(images, padding=3, hflip=True, generator=generator)
    replay = torch.Generator().manual_seed(5)
    top = torch.randint(0, 7, (16,), generator=replay)
    left = torch.randint(0, 7, (16,), generator=replay)
    flip = torch.rand(16, generator=replay) < 0.5
    assert 0 < int(flip.sum()) < 16 and len(set(top.tolist())) > 1
    assert torch.equal(ours, reference_crop_flip(images, top, left, flip, 3))


def test_training_epoch_visits_every_sample_once_with_explicit_last_batch():
    dataset = make_synthetic(num_samples=70, num_classes=7, image_size=8, channels=1, seed=0, train=True)
    dataset.labels = torch.arange(70)  # make each sample identifiable by its label
    dataset.num_classes = 70
    loader = InMemoryLoader(dataset, batch_size=32, train=True, seed=3, augment=False)
    sizes, seen = [], []
    for images, labels in loader:
        sizes.append(labels.shape[0])
        seen += labels.tolist()
    assert sizes == [32, 32, 6] and sorted(seen) == list(range(70)) and seen != list(range(70))
    # a trailing batch of one sample joins the previous batch (BatchNorm cannot train on one sample)
    loader = InMemoryLoader(dataset, batch_size=23, train=True, seed=3, augment=False)
    assert [b - a for a, b in loader.batch_bounds()] == [23, 23, 24] and len(loader) == 3
    # evaluation keeps the order and every batch as is
    loader = InMemoryLoader(dataset, batch_size=23, train=False)
    assert torch.cat([labels for _, labels in loader]).tolist() == list(range(70))


def test_epochs_are_reproducible_functions_of_seed_and_epoch():
    dataset = make_synthetic(num_samples=40, num_classes=4, image_size=8, channels=3, seed=0, train=True)
    first = InMemoryLoader(dataset, batch_size=16, train=True, seed=1)
    second = InMemoryLoader(dataset, batch_size=16, train=True, seed=1)
    first.set_epoch(4)
    second.set_epoch(3)
    list(second)  # consuming another epoch first must not matter
    second.set_epoch(4)
    for (a, la), (b, lb) in zip(first, second):
        assert torch.equal(a, b) and torch.equal(la, lb)
    first.set_epoch(5)
    second.set_epoch(4)
    assert not torch.equal(next(iter(first))[0], next(iter(second))[0])


def test_normalisation_matches_mean_and_std():
    dataset = make_synthetic(num_samples=8, num_classes=2, image_size=4, channels=3, seed=0, train=True)
    images, _ = next(iter(InMemoryLoader(dataset, batch_size=8, train=False)))
    mean = torch.tensor(dataset.mean).view(1, 3, 1, 1)
    std = torch.tensor(dataset.std).view(1, 3, 1, 1)
    torch.testing.assert_close(images, (dataset.images.float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_synthetic_train_and_test_share_templates_but_not_samples():
    train = make_synthetic(num_samples=200, num_classes=5, image_size=8, channels=3, seed=0, train=True)
    test = make_synthetic(num_samples=100, num_classes=5, image_size=8, channels=3, seed=0, train=False)
    assert not torch.equal(train.images[:100], test.images)
    assert torch.bincount(train.labels).tolist() == [40] * 5
    # the classes are learnable: nearest train class-mean classifies test images well above chance
    train_means = torch.stack([train.images[train.labels == k].float().mean(0).flatten() for k in range(5)])
    distances = torch.cdist(test.images.float().flatten(1), train_means)
    accuracy = (distances.argmin(dim=1) == test.labels).float().mean().item()
    assert accuracy > 0.9


def test_train_subset_is_seeded():
    config = DataConfig(dataset="synthetic", train_subset=30)
    a, b = load_dataset(config, train=True, seed=4), load_dataset(config, train=True, seed=4)
    assert len(a) == 30 and torch.equal(a.images, b.images)
    assert not torch.equal(a.labels, load_dataset(config, train=True, seed=5).labels)
