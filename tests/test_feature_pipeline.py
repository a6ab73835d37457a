"""ReviewKD, FitNet, PEFD and DiffKD end to end through `pipeline.distill` on synthetic data.

Each method runs with and without ND, against a 64-d teacher (resnet14: no ND projector) and a
256-d teacher (resnet8x4: projector). Checked: the terms in metrics.jsonl, every trainable parameter
(student, adapters, ND projector) in the optimiser and stepped, the adapters in the checkpoint, and
the exported student.pt holding the student alone.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from ndkd import pipeline
from ndkd.config import config_from_dict
from ndkd.distillers import build_distiller
from ndkd.models import create_model
from ndkd.models.weights import read_state_dict, save_weights

TERMS = {
    "reviewkd": {"reviewkd"},
    "fitnet": {"fitnet"},
    "pefd": {"pefd"},
    "diffkd": {"diffkd_feat", "diffkd_feat_diffusion", "diffkd_ae", "diffkd_logit", "diffkd_logit_diffusion"},
}
ADAPTERS = {"reviewkd": "abfs.", "fitnet": "regressor.", "pefd": "projector_ensemble.", "diffkd": "feature_head."}
SYNTHETIC = {"num_train": 64, "num_test": 32, "num_classes": 4, "image_size": 12, "channels": 3}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A random teacher of each width and its class-means, computed once for the module."""
    root = tmp_path_factory.mktemp("teachers")
    made = {}
    for arch in ("resnet14", "resnet8x4"):
        torch.manual_seed(11)
        weights = root / f"{arch}.pt"
        save_weights(create_model(arch, num_classes=4, in_channels=3), weights, arch=arch)
        config = config_from_dict({
            "name": arch, "output_dir": str(root), "device": "cpu",
            "data": {"dataset": "synthetic", "synthetic": SYNTHETIC}, "teacher": {"arch": arch, "checkpoint": str(weights)},
        })  # fmt: skip
        made[arch] = (weights, pipeline.compute_centers(config))
    return made


@pytest.mark.parametrize("nd_weight", [0.0, 1.0], ids=["plain", "nd"])
@pytest.mark.parametrize("teacher_arch", ["resnet14", "resnet8x4"])
@pytest.mark.parametrize("method", sorted(TERMS))
def test_feature_method_trains_end_to_end(method, teacher_arch, nd_weight, teachers, tmp_path):
    weights, class_means = teachers[teacher_arch]
    config = config_from_dict({
        "name": "e2e", "output_dir": str(tmp_path), "seed": 0, "device": "cpu",
        "data": {"dataset": "synthetic", "batch_size": 32, "eval_batch_size": 64, "crop_padding": 2, "synthetic": SYNTHETIC},
        "teacher": {"arch": teacher_arch, "checkpoint": str(weights)},
        "student": {"arch": "resnet8"},
        "train": {"epochs": 1, "lr": 0.05, "milestones": [], "log_interval": 1},
        "distill": {"method": method, "nd": {"weight": nd_weight, "class_means": str(class_means)}},
    })  # fmt: skip
    summary = pipeline.distill(config, progress=False)
    run_dir = tmp_path / "e2e" / "student"
    assert summary["finished"] and summary["method"] == method

    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    expected_terms = TERMS[method] | ({"nd"} if nd_weight else set())
    assert set(record["train"]) == {"loss", "ce", "top1"} | expected_terms
    assert all(math.isfinite(record["train"][term]) and record["train"][term] > 0 for term in expected_terms)

    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    projected = nd_weight > 0 and teacher_arch == "resnet8x4"
    assert any(key.startswith(ADAPTERS[method]) for key in state["student"])
    assert any(key.startswith("nd.projector.") for key in state["student"]) == projected
    assert not any(key.startswith("teacher.") for key in state["student"])

    rebuilt = build_distiller(
        config.distill, create_model("resnet8", 4), create_model(teacher_arch, 4),
        torch.rand(4, 64 if teacher_arch == "resnet14" else 256), (3, 12, 12),
    )  # fmt: skip
    trainable = len(rebuilt.trainable_parameters())
    assert trainable > len(list(rebuilt.student.parameters()))
    assert len(state["optimizer"]["param_groups"][0]["params"]) == trainable  # adapters are optimised ...
    assert len(state["optimizer"]["state"]) == trainable  # ... and every one got a gradient (momentum buffer)

    exported = read_state_dict(run_dir / "student.pt")
    assert set(exported) == set(create_model("resnet8", 4).state_dict())  # the student alone

