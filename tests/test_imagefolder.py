"""Image-folder datasets: scanning, ImageNet transforms, seeded epochs, shards, and `ndkd run` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ndkd.centers import read_class_means_metadata
from ndkd.cli import main
from ndkd.config import DataConfig, ImageFolderConfig
from ndkd.data import ImageFolderLoader, load_dataset, make_loader
from ndkd.data.imagefolder import random_resized_box
from ndkd.errors import DataError

CLASSES = ["cat", "dog", "owl"]


def write_folder(root, per_class=(5, 2), size=(40, 30)):
    """Class-coloured images (PNG and JPEG, some grey and palette) under root/train and root/val."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for index, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
                pixels[..., index] += 180  # the class is the dominant colour
                image = Image.fromarray(pixels)
                if k == 1:
                    image = image.convert("L")  # grey images must come out with 3 channels
                elif k == 2:
                    image = image.convert("P")
                image.save(folder / (f"{k}.png" if k % 2 == 0 else f"{k}.jpg"))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def folder_config(root, **settings) -> DataConfig:
    return DataConfig(dataset="imagefolder", root=str(root), batch_size=4, eval_batch_size=8,
                      imagefolder=ImageFolderConfig(image_size=16, resize_size=20, num_workers=0, **settings))  # fmt: skip


def test_scan_keeps_sorted_classes_and_only_images(tmp_path):
    write_folder(tmp_path)
    train = load_dataset(folder_config(tmp_path), train=True)
    val = load_dataset(folder_config(tmp_path), train=False)
    assert train.class_names == val.class_names == CLASSES
    assert len(train) == 15 and len(val) == 6
    assert train.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert train.num_classes == 3 and train.in_channels == 3 and train.input_shape == (3, 16, 16)
    assert all(not f.endswith(".txt") for f in train.files)


def test_missing_or_inconsistent_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="needs data.root"):
        load_dataset(DataConfig(dataset="imagefolder"), train=True)
    with pytest.raises(DataError, match=r"train does not exist: data.root must hold train/ and val/"):
        load_dataset(folder_config(tmp_path), train=True)
    write_folder(tmp_path)
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match="has class folders that .* lacks: zebra"):
        load_dataset(folder_config(tmp_path), train=False)
    (tmp_path / "train" / "emu").mkdir()
    with pytest.raises(DataError, match="class folder.* without images .*: emu"):
        load_dataset(folder_config(tmp_path), train=True)


def test_evaluation_view_is_resize_then_center_crop(tmp_path):
    write_folder(tmp_path, per_class=(1, 1))
    config = folder_config(tmp_path, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    val = load_dataset(config, train=False)
    images, labels = next(iter(make_loader(val, config, train=False, device=torch.device("cpu"))))
    assert images.shape == (3, 3, 16, 16) and labels.tolist() == [0, 1, 2]
    # reference with PIL directly: shorter side 30 -> 20 (40x30 -> 26x20, the long side truncated), central 16x16
    source = Image.open(val.files[0]).convert("RGB").resize((26, 20), Image.BILINEAR)
    crop = np.array(source.crop((5, 2, 21, 18)))
    expected = torch.from_numpy(crop).permute(2, 0, 1).float() / 255
    assert (images[0] - expected).abs().max() < 1.5 / 255


def test_normalisation_uses_configured_mean_and_std(tmp_path):
    write_folder(tmp_path, per_class=(1, 1))
    plain = folder_config(tmp_path, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    custom = folder_config(tmp_path, mean=[0.5, 0.25, 0.0], std=[0.5, 0.5, 2.0])
    raw = next(iter(make_loader(load_dataset(plain, train=False), plain, train=False, device=torch.device("cpu"))))[0]
    normalised = next(iter(make_loader(load_dataset(custom, train=False), custom, train=False, device=torch.device("cpu"))))[0]
    expected = (raw - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.5, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalised, expected)


def test_one_channel_option_converts_everything_to_grey(tmp_path):
    write_folder(tmp_path, per_class=(1, 1))
    config = folder_config(tmp_path, channels=1, mean=[0.5], std=[0.5])
    images, _ = next(iter(make_loader(load_dataset(config, train=True), config, train=True, device=torch.device("cpu"))))
    assert images.shape[1] == 1


def test_random_resized_box_stays_inside_and_respects_scale_and_ratio():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_box(30, 40, 0.25, generator)
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 40
        assert 0.25 * 1200 * 0.8 <= h * w <= 1200 and 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25  # rounding slack
    # impossible draws fall back to the largest centred crop of an allowed aspect ratio
    assert random_resized_box(100, 10, 1.0, torch.Generator().manual_seed(0)) == (43, 0, 13, 10)


def test_epochs_are_seeded_per_epoch_and_independent_of_workers(tmp_path):
    write_folder(tmp_path)
    config = folder_config(tmp_path)
    train = load_dataset(config, train=True)

    def epoch(workers: int, number: int):
        loader = ImageFolderLoader(train, 4, train=True, seed=3, num_workers=workers)
        loader.set_epoch(number)
        return [batch for batch in loader]

    first, again, with_workers, other = epoch(0, 1), epoch(0, 1), epoch(2, 1), epoch(0, 2)
    assert len(first) == 4 and [b[0].shape[0] for b in first] == [4, 4, 4, 3]  # 15 images
    for (a, la), (b, lb), (c, lc) in zip(first, again, with_workers):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(la, lb) and torch.equal(la, lc)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, other))
    assert sorted(torch.cat([labels for _, labels in first]).tolist()) == train.labels.tolist()


def test_processes_split_every_global_batch_into_contiguous_parts(tmp_path):
    write_folder(tmp_path)
    train = load_dataset(folder_config(tmp_path), train=True)

    def epoch(rank: int, world_size: int):
        loader = ImageFolderLoader(train, 5, train=True, seed=1, rank=rank, world_size=world_size)
        loader.set_epoch(4)
        return list(loader)

    whole = epoch(0, 1)
    parts = [epoch(rank, 2) for rank in range(2)]
    assert [b[1].shape[0] for b in whole] == [5, 5, 5]
    for step, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][step][0], parts[1][step][0]]), images)
        assert torch.equal(torch.cat([parts[0][step][1], parts[1][step][1]]), labels)
    assert [b[1].shape[0] for b in parts[0]] == [3, 3, 3] and [b[1].shape[0] for b in parts[1]] == [2, 2, 2]
    # a last global batch too small to give both processes two samples joins the previous one
    loader = ImageFolderLoader(train, 6, train=True, rank=0, world_size=2)
    assert loader.batch_bounds() == [(0, 6), (6, 15)] and len(loader) == 2


def test_ndkd_run_on_an_image_folder_teacher_centers_kdpp(tmp_path, capsys):
    """A config naming only the folder, the two architectures and the schedule (crops shrunk on the command line)."""
    write_folder(tmp_path / "data", per_class=(6, 2), size=(36, 36))
    recipe = {
        "name": "folder", "output_dir": str(tmp_path / "runs"), "device": "cpu",
        "data": {"dataset": "imagefolder", "root": str(tmp_path / "data")},
        "teacher": {"arch": "torchvision/resnet18", "train": {"epochs": 1, "milestones": []}},
        "student": {"arch": "resnet8"},
        "train": {"epochs": 1, "milestones": []},
        "distill": {"method": "kd", "nd": {"weight": 1.0}},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "data.imagefolder.image_size=32", "data.imagefolder.resize_size=36", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "teacher" in table and "kd + ND(1)" in table
    run = tmp_path / "runs" / "folder"
    assert json.loads((run / "teacher" / "classes.json").read_text()) == CLASSES
    assert json.loads((run / "student" / "classes.json").read_text()) == CLASSES
    metadata = read_class_means_metadata(run / "class_means.safetensors")
    assert json.loads(metadata["class_names"]) == CLASSES and metadata["dataset"] == "imagefolder"
    assert metadata["dim"] == "512" and metadata["augmentation"].startswith("random_resized_crop=32")
    summary = json.loads((run / "student" / "summary.json").read_text())
    assert summary["finished"] and 0.0 <= summary["test_top1_last"] <= 100.0
