"""Shared fixtures: tiny synthetic configs, a random teacher checkpoint, real-data availability."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from ndkd.config import config_from_dict
from ndkd.data.datasets import DEBIAN_FASHION_MNIST
from ndkd.models import create_model
from ndkd.models.weights import save_weights

TINY = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {
        "dataset": "synthetic",
        "batch_size": 32,
        "eval_batch_size": 64,
        "crop_padding": 2,
        "synthetic": {"num_train": 96, "num_test": 64, "num_classes": 4, "image_size": 12, "channels": 3},
    },
    "teacher": {"arch": "resnet8x4", "train": {"epochs": 1, "lr": 0.05, "milestones": []}},
    "student": {"arch": "resnet8"},
    "train": {"epochs": 3, "lr": 0.05, "milestones": [2], "log_interval": 2},
    "distill": {"method": "kd", "warmup_epochs": 1, "options": {"temperature": 4.0}},
}


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def tiny_dict(tmp_path: Path) -> dict:
    """A raw config mapping for a seconds-long run on synthetic data, writing under tmp_path."""
    return merge(TINY, {"output_dir": str(tmp_path / "runs")})


@pytest.fixture
def tiny_config(tiny_dict):
    return config_from_dict(tiny_dict)


@pytest.fixture
def random_teacher(tmp_path: Path) -> Path:
    """A randomly initialised resnet8x4 teacher (4 classes, 3 channels) saved in the standard layout."""
    torch.manual_seed(123)
    path = tmp_path / "teacher.pt"
    save_weights(create_model("resnet8x4", num_classes=4, in_channels=3), path, arch="resnet8x4")
    return path


def fashion_mnist_present() -> bool:
    return (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()


@pytest.fixture
def fashion_mnist() -> Path:
    """The Debian Fashion-MNIST folder; `make test` installs it and requires it (NDKD_REQUIRE_REAL_DATA=1)."""
    if not fashion_mnist_present():
        if os.environ.get("NDKD_REQUIRE_REAL_DATA") == "1":
            pytest.fail("Fashion-MNIST is required (NDKD_REQUIRE_REAL_DATA=1) but not installed: apt-get install dataset-fashion-mnist")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return DEBIAN_FASHION_MNIST
