"""Training runs: exact resume, nothing lost on failure, exported weights, config changes refused."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch

from ndkd import pipeline
from ndkd.config import config_from_dict
from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import _METHODS, register_distiller
from ndkd.errors import ConfigError, TrainingError
from ndkd.models import create_model, load_weights


class Stop(Exception):
    pass


def stop_after(epoch_to_stop: int):
    def callback(epoch: int, record: dict) -> None:
        if epoch == epoch_to_stop:
            raise Stop

    return callback


@dataclass
class NanOptions:
    from_epoch: int = 1


class NanFromEpoch(Distiller):
    def forward_train(self, images, labels, epoch):
        logits, losses = super().forward_train(images, labels, epoch)
        if epoch >= self.options.from_epoch:
            losses["broken"] = logits.sum() * float("nan")
        return logits, losses


@pytest.fixture
def nan_method():
    """`test_nan` registered for one test only, so that no other test sees it in the registry."""
    register_distiller("test_nan", options=NanOptions, needs_teacher=False, description="test only: NaN loss from an epoch on")(NanFromEpoch)
    yield
    del _METHODS["test_nan"]


def _metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def _kdpp_config(tiny_dict, random_teacher, output_dir):
    tiny_dict = dict(tiny_dict, output_dir=str(output_dir))
    tiny_dict["teacher"] = dict(tiny_dict["teacher"], checkpoint=str(random_teacher))
    tiny_dict["distill"] = dict(tiny_dict["distill"], nd={"weight": 1.0})  # 64-d student, 256-d teacher: projector
    return config_from_dict(tiny_dict)


def test_resume_after_epoch_k_equals_uninterrupted_run(tiny_dict, random_teacher, tmp_path):
    whole = _kdpp_config(tiny_dict, random_teacher, tmp_path / "whole")
    parts = _kdpp_config(tiny_dict, random_teacher, tmp_path / "parts")
    for config in (whole, parts):
        pipeline.compute_centers(config)
    uninterrupted = pipeline.distill(whole, progress=False)

    with pytest.raises(Stop):
        pipeline.distill(parts, progress=False, on_epoch_end=stop_after(1))
    run_dir = tmp_path / "parts" / "tiny" / "student"
    assert len(_metrics(run_dir)) == 1 and not (run_dir / "student.pt").exists()
    resumed = pipeline.distill(parts, progress=False)

    assert "resuming" in (run_dir / "log.txt").read_text()
    assert _metrics(run_dir) == _metrics(tmp_path / "whole" / "tiny" / "student")
    assert len(_metrics(run_dir)) == 3
    assert {k: v for k, v in resumed.items() if k != "fingerprint"} == {k: v for k, v in uninterrupted.items() if k != "fingerprint"}
    a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "tiny" / "student" / "checkpoints" / "last.pt", weights_only=True)
    assert a["student"].keys() == b["student"].keys()
    assert any(key.startswith("nd.projector.") for key in a["student"])
    for key in a["student"]:
        assert torch.equal(a["student"][key], b["student"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert a["epoch"] == 3 and a["scheduler"]["last_epoch"] == 3


def test_finished_run_is_skipped_and_changed_config_is_refused(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, distill=dataclasses.replace(tiny_config.distill, method="none", options={}))
    first = pipeline.distill(config, progress=False)
    mtime = (tmp_path / "runs" / "tiny" / "student" / "student.pt").stat().st_mtime_ns
    assert pipeline.distill(config, progress=False) == first
    assert (tmp_path / "runs" / "tiny" / "student" / "student.pt").stat().st_mtime_ns == mtime
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=0.01))
    with pytest.raises(ConfigError, match="holds a run with a different config.*--restart"):
        pipeline.distill(changed, progress=False)
    pipeline.distill(changed, restart=True, progress=False)
    kept = [p.name for p in (tmp_path / "runs" / "tiny").iterdir() if p.name.startswith("student.old-")]
    assert len(kept) == 1  # the old run was moved aside, not deleted


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tiny_dict, tmp_path, nan_method):
    tiny_dict["distill"] = {"method": "test_nan", "options": {"from_epoch": 1}}
    config = config_from_dict(tiny_dict)
    with pytest.raises(TrainingError) as caught:
        pipeline.distill(config, progress=False)
    run_dir = tmp_path / "runs" / "tiny" / "student"
    message = str(caught.value)
    assert message.startswith("the loss became NaN or infinite in epoch 2 (loss=nan, ce=")
    assert f"the last good checkpoint is {run_dir / 'checkpoints' / 'last.pt'}" in message
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
    assert len(_metrics(run_dir)) == 1 and "epoch 1/3" in (run_dir / "log.txt").read_text()


def test_exported_student_loads_alone_and_reproduces_the_summary(tiny_config, random_teacher):
    config = dataclasses.replace(tiny_config, teacher=dataclasses.replace(tiny_config.teacher, checkpoint=str(random_teacher)))
    summary = pipeline.distill(config, progress=False)
    run_dir = pipeline.run_root(config) / "student"
    payload = torch.load(run_dir / "student.pt", weights_only=True)
    assert payload["arch"] == "resnet8" and payload["num_classes"] == 4
    model = load_weights(create_model("resnet8", 4), run_dir / "student.pt")
    assert model is not None
    metrics = pipeline.evaluate_weights(config, "resnet8", run_dir / "student.pt")
    assert metrics["top1"] == pytest.approx(summary["test_top1_last"])
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"student", "optimizer", "scheduler", "scaler", "epoch", "best", "config", "fingerprint"} <= set(checkpoint)
    assert checkpoint["config"]["train"]["epochs"] == 3
    assert (run_dir / "config.yaml").read_text().startswith("name: tiny")
