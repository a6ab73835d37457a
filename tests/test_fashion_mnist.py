"""Real data: Debian's Fashion-MNIST files load, and the whole KD++ pipeline learns from them."""

from __future__ import annotations

import json

import torch
import yaml

from ndkd.cli import main
from ndkd.config import DataConfig
from ndkd.data import load_dataset


def test_fashion_mnist_from_debian_package(fashion_mnist):
    train = load_dataset(DataConfig(dataset="fashion_mnist"), train=True)
    test = load_dataset(DataConfig(dataset="fashion_mnist"), train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    mean = train.images.float().mean().item() / 255
    assert abs(mean - train.mean[0]) < 1e-3  # the normalisation constants are this data's statistics


def test_kdpp_pipeline_learns_on_fashion_mnist(fashion_mnist, tmp_path, capsys):
    config = {
        "name": "fm",
        "output_dir": str(tmp_path / "runs"),
        "device": "cpu",
        "data": {"dataset": "fashion_mnist", "train_subset": 1500, "batch_size": 100, "eval_batch_size": 2000, "crop_padding": 2},
        "teacher": {"arch": "resnet8", "train": {"epochs": 2, "lr": 0.1, "milestones": [1]}},
        "student": {"arch": "resnet8"},
        "train": {"epochs": 2, "lr": 0.1, "milestones": [1], "log_interval": 5},
        "distill": {"method": "kd", "options": {"temperature": 4.0}, "nd": {"weight": 2.0}},
    }
    path = tmp_path / "fm.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--no-progress"]) == 0
    root = tmp_path / "runs" / "fm"
    teacher = json.loads((root / "teacher" / "summary.json").read_text())
    student = json.loads((root / "student" / "summary.json").read_text())
    assert teacher["test_top1_last"] > 50.0 and student["test_top1_last"] > 50.0  # chance is 10 %
    record = json.loads((root / "student" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 < record["train"]["nd"] < 2.0 * 2.0  # weighted ND lies in [0, 2 * weight]
    assert "student" in capsys.readouterr().out
