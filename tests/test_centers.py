"""Class-means: equal to a plain per-class mean; safetensors and official JSON round trips; clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from ndkd.centers import compute_class_means, load_class_means, read_class_means_metadata, save_class_means
from ndkd.data import make_synthetic
from ndkd.errors import ClassMeansError
from ndkd.models import FeatureTap, create_model


def test_class_means_equal_plain_per_class_mean():
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=5, in_channels=3)
    teacher.train()  # must be switched to eval for the pass and restored afterwards
    dataset = make_synthetic(num_samples=53, num_classes=5, image_size=8, channels=3, seed=2, train=True)
    ours = compute_class_means(teacher, dataset, augment=False, batch_size=16)
    assert teacher.training

    teacher.eval()
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    with torch.no_grad():
        embeddings = FeatureTap(teacher)((dataset.images.float() / 255 - mean) / std).embedding
    for k in range(5):
        rows = [embeddings[i] for i in range(len(dataset)) if int(dataset.labels[i]) == k]
        torch.testing.assert_close(ours[k], torch.stack(rows).mean(0), rtol=1e-5, atol=1e-6)


def test_augmented_class_means_use_one_augmented_view_and_are_seeded():
    teacher = create_model("resnet8", num_classes=3, in_channels=1).eval()
    dataset = make_synthetic(num_samples=30, num_classes=3, image_size=8, channels=1, seed=0, train=True)
    plain = compute_class_means(teacher, dataset, augment=False)
    augmented = compute_class_means(teacher, dataset, augment=True, seed=1, crop_padding=2)
    again = compute_class_means(teacher, dataset, augment=True, seed=1, crop_padding=2)
    assert torch.equal(augmented, again) and not torch.allclose(augmented, plain)


def test_a_class_without_samples_is_refused():
    teacher = create_model("resnet8", num_classes=4, in_channels=1)
    dataset = make_synthetic(num_samples=12, num_classes=4, image_size=8, channels=1, seed=0, train=True)
    dataset.labels = dataset.labels % 3  # class 3 disappears
    with pytest.raises(ClassMeansError, match=r"class\(es\) \[3\] have no training sample"):
        compute_class_means(teacher, dataset, augment=False)


def test_safetensors_round_trip_with_metadata(tmp_path):
    means = torch.randn(10, 64)
    save_class_means(tmp_path / "c.safetensors", means, torch.arange(10), teacher="resnet20", dataset="fashion_mnist")
    torch.testing.assert_close(load_class_means(tmp_path / "c.safetensors", num_classes=10, dim=64), means, rtol=0, atol=0)
    meta = read_class_means_metadata(tmp_path / "c.safetensors")
    assert meta["teacher"] == "resnet20" and meta["num_classes"] == "10" and meta["dim"] == "64"


def test_official_json_loads_in_class_order(tmp_path):
    rows = {k: [float(k), k * 0.5, -1.0] for k in range(4)}
    shuffled = {str(k): rows[k] for k in (2, 0, 3, 1)}  # the official files list classes in loader order
    (tmp_path / "center_emb_train.json").write_text(json.dumps(shuffled))
    loaded = load_class_means(tmp_path / "center_emb_train.json", num_classes=4, dim=3)
    assert loaded.dtype == torch.float32
    assert loaded.tolist() == [rows[k] for k in range(4)]


def test_mismatch_errors_say_what_differs(tmp_path):
    save_class_means(tmp_path / "c.safetensors", torch.randn(10, 64))
    with pytest.raises(ClassMeansError) as caught:
        load_class_means(tmp_path / "c.safetensors", num_classes=100, dim=256)
    message = str(caught.value)
    assert "10 classes but the dataset has 100" in message
    assert "width 64 but the teacher's embedding has width 256" in message
    assert "ndkd centers CONFIG" in message
    (tmp_path / "gap.json").write_text(json.dumps({"0": [1.0], "2": [2.0]}))
    with pytest.raises(ClassMeansError, match="class indices must be 0..1 with none missing"):
        load_class_means(tmp_path / "gap.json")
    with pytest.raises(ClassMeansError, match="does not exist"):
        load_class_means(tmp_path / "absent.safetensors")
