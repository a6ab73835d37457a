"""The logit distillers (dkd, dist, projected-logit kd): weights, warm-up, end-to-end runs; every method on
Fashion-MNIST with and without ND; `ndkd methods`."""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ndkd import pipeline
from ndkd.cli import main
from ndkd.config import DistillConfig, NDConfig, config_from_dict
from ndkd.data.datasets import read_idx
from ndkd.distillers import build_distiller, list_methods
from ndkd.distillers.base import Distiller
from ndkd.distillers.nd import ND_VARIANTS
from ndkd.distillers.registry import MethodEntry, _METHODS
from ndkd.errors import ConfigError
from ndkd.losses import dist_loss, dkd_loss, kd_loss, nd_loss
from ndkd.models import FeatureTap, create_model
from ndkd.models.weights import save_weights

@contextlib.contextmanager
def torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, busy CPU two OpenMP threads that
    wait for each other make these runs ~10x slower; results do not depend on the thread count."""
    with torch_threads(1):
        yield


# name -> (method, options, the method's logged terms)
LOGIT_METHODS = {
    "dkd": ("dkd", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}, {"tckd", "nckd"}),
    "dist": ("dist", {"beta": 1.0, "gamma": 1.0, "tau": 4.0}, {"dist_inter", "dist_intra"}),
    "kdproj": ("kd", {"temperature": 4.0, "logit_projector": True}, {"kd"}),
}


def _models(teacher="resnet14", classes=4):
    torch.manual_seed(0)
    return create_model("resnet8", classes), create_model(teacher, classes)


def _batch(classes=4):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 8, 8, generator=generator), torch.arange(6) % classes


# ------------------------------------------------------------------------------------ the distillers


def test_dkd_distiller_returns_alpha_and_beta_weighted_terms():
    student, teacher = _models()
    config = DistillConfig(method="dkd", weight=2.0, options={"alpha": 0.5, "beta": 3.0, "temperature": 2.0})
    distiller = build_distiller(config, student, teacher).train()
    images, labels = _batch()
    logits, losses = distiller.forward_train(images, labels, epoch=0)
    assert set(losses) == {"ce", "tckd", "nckd"}
    teacher_logits = teacher(images)
    tckd = dkd_loss(logits, teacher_logits, labels, 1.0, 0.0, 2.0)
    nckd = dkd_loss(logits, teacher_logits, labels, 0.0, 1.0, 2.0)
    torch.testing.assert_close(losses["tckd"], 2.0 * 0.5 * tckd)
    torch.testing.assert_close(losses["nckd"], 2.0 * 3.0 * nckd)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(logits, labels))


def test_dist_distiller_returns_beta_and_gamma_weighted_terms():
    student, teacher = _models()
    config = DistillConfig(method="dist", options={"beta": 2.0, "gamma": 0.5, "tau": 3.0})
    distiller = build_distiller(config, student, teacher).train()
    images, labels = _batch()
    logits, losses = distiller.forward_train(images, labels, epoch=0)
    assert set(losses) == {"ce", "dist_inter", "dist_intra"}
    teacher_logits = teacher(images)
    torch.testing.assert_close(losses["dist_inter"], dist_loss(logits, teacher_logits, 2.0, 0.0, 3.0))
    torch.testing.assert_close(losses["dist_intra"], dist_loss(logits, teacher_logits, 0.0, 0.5, 3.0))


def test_projected_logit_kd_with_identity_projector_equals_kd_and_projector_is_trained_not_exported():
    student, teacher = _models()
    config = DistillConfig(method="kd", options={"temperature": 4.0, "logit_projector": True})
    distiller = build_distiller(config, student, teacher).train()
    projector = distiller.logit_projector
    assert (projector.in_features, projector.out_features) == (4, 4) and projector.bias is not None
    assert "logit_projector" in distiller.extra_modules()
    assert {id(p) for p in projector.parameters()} <= {id(p) for p in distiller.trainable_parameters()}
    assert {"logit_projector.weight", "logit_projector.bias"} <= set(distiller.trainable_state_dict())
    images, labels = _batch()
    with torch.no_grad():
        projector.weight.copy_(torch.eye(4))
        projector.bias.zero_()
    logits, losses = distiller.forward_train(images, labels, epoch=0)
    torch.testing.assert_close(losses["kd"], kd_loss(logits, teacher(images), 4.0))
    with torch.no_grad():
        projector.weight.mul_(2.0)  # P(z) = 2z: the KD term reads the projected logits, CE the raw ones
    logits, losses = distiller.forward_train(images, labels, epoch=0)
    torch.testing.assert_close(losses["kd"], kd_loss(2.0 * logits, teacher(images), 4.0))
    torch.testing.assert_close(losses["ce"], F.cross_entropy(logits, labels))
    losses["kd"].backward()
    assert projector.weight.grad is not None and student.fc.weight.grad is not None
    plain = build_distiller(DistillConfig(method="kd"), *_models())
    assert plain.logit_projector is None and "logit_projector" not in plain.extra_modules()


@pytest.mark.parametrize("name", sorted(LOGIT_METHODS))
@pytest.mark.parametrize("nd_warmup", [False, True])
def test_base_terms_are_warmed_up_and_nd_only_when_asked(name, nd_warmup):
    method, options, terms = LOGIT_METHODS[name]
    student, teacher = _models()  # 64-d both: no projector, so ND is deterministic in train mode
    config = DistillConfig(method=method, options=options, warmup_epochs=4, nd=NDConfig(weight=1.5, warmup=nd_warmup))
    class_means = torch.rand(4, 64) + 0.1
    distiller = build_distiller(config, student, teacher, class_means).train()
    images, labels = _batch()
    _, full = distiller.forward_train(images, labels, epoch=4)
    for epoch, ramp in ((0, 0.0), (1, 0.25), (3, 0.75), (7, 1.0)):
        logits, losses = distiller.forward_train(images, labels, epoch)
        assert set(losses) == {"ce", "nd", *terms}
        for term in terms:
            torch.testing.assert_close(losses[term], ramp * full[term])
        nd_ramp = ramp if nd_warmup else 1.0
        expected_nd = 1.5 * nd_loss(FeatureTap(student)(images).embedding, FeatureTap(teacher)(images).embedding, class_means, labels)
        torch.testing.assert_close(losses["nd"], nd_ramp * expected_nd)
        torch.testing.assert_close(losses["ce"], F.cross_entropy(logits, labels))


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("dkd", {"temperature": 0}, "distill.options.temperature must be positive, got 0"),
        ("dist", {"tau": -1.0}, "distill.options.tau must be positive, got -1.0"),
        ("kd", {"temperature": 0.0}, "distill.options.temperature must be positive, got 0.0"),
        ("dkd", {"temperatur": 1.0}, "unknown key 'distill.options.temperatur'. Did you mean 'temperature'?"),
    ],
)
def test_bad_method_options_are_rejected_when_the_config_loads(tiny_dict, method, options, message):
    tiny_dict["distill"] = {"method": method, "options": options}
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        config_from_dict(tiny_dict)


# ------------------------------------------------------------------------------ end to end (synthetic)


def _write(tmp_path, data, name):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def teacher_64d(tmp_path):
    """A randomly initialised resnet14 teacher (64-d embedding, as the resnet8 student)."""
    torch.manual_seed(321)
    path = tmp_path / "teacher14.pt"
    save_weights(create_model("resnet14", num_classes=4, in_channels=3), path, arch="resnet14")
    return path


@pytest.mark.parametrize("teacher_arch", ["resnet8x4", "resnet14"], ids=["projector-64-to-256", "no-projector-64"])
def test_every_logit_method_trains_through_ndkd_distill_with_and_without_nd(tmp_path, tiny_dict, random_teacher, teacher_64d, teacher_arch, capsys):
    checkpoint = random_teacher if teacher_arch == "resnet8x4" else teacher_64d
    students = []
    for name, (method, options, _) in LOGIT_METHODS.items():
        students.append({"name": name, "distill": {"method": method, "options": options}})
        students.append({"name": name + "pp", "distill": {"method": method, "options": options, "nd": {"weight": 1.0}}})
    students.append({"name": "kd_sifn", "distill": {"method": "kd", "nd": {"weight": 0.5, "variant": "sifn", "delta_r": 0.5}}})
    students.append({"name": "kd_infonce", "distill": {"method": "kd", "nd": {"weight": 1.0, "variant": "infonce", "temperature": 0.2}}})
    data = dict(tiny_dict, students=students)
    data["teacher"] = dict(data["teacher"], arch=teacher_arch, checkpoint=str(checkpoint))
    data["train"] = dict(data["train"], epochs=2, milestones=[1])
    path = _write(tmp_path, data, "recipe.yaml")
    assert main(["centers", path, "--no-progress"]) == 0
    assert main(["distill", path, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    root = tmp_path / "runs" / "tiny"
    for entry in students:
        name, run_dir = entry["name"], root / entry["name"]
        assert f"{name} (resnet8): test top-1" in printed
        terms = LOGIT_METHODS[name.removesuffix("pp")][2] if not name.startswith("kd_") else {"kd"}
        with_nd = "nd" in entry["distill"]
        records = _records(run_dir)
        assert len(records) == 2
        for record in records:
            train = record["train"]
            assert set(train) == {"loss", "top1", "ce", *terms} | ({"nd"} if with_nd else set())
            assert all(math.isfinite(v) for v in train.values())
        first, second = records[0]["train"], records[1]["train"]
        assert all(first[t] == 0.0 for t in terms)  # warmup_epochs 1: the method's term is off in epoch 1
        assert all(second[t] > 0.0 for t in terms)
        if with_nd:
            assert first["nd"] > 0.0  # ND is not warmed up by default
        if entry["distill"].get("nd", {}).get("variant") == "sifn":
            assert first["nd"] == pytest.approx(0.5 * 0.5**2, rel=1e-5)  # weight * delta_r^2, whatever the features
        state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["student"]
        has_projector = with_nd and teacher_arch == "resnet8x4"
        assert any(k.startswith("nd.projector.") for k in state) == has_projector
        assert ("logit_projector.weight" in state) == (entry["distill"].get("options", {}).get("logit_projector", False))
        exported = torch.load(run_dir / "student.pt", weights_only=True)["model"]
        assert set(exported) == set(create_model("resnet8", 4).state_dict())  # the student alone


# ---------------------------------------------------------------- end to end (real data, trained teacher)


@pytest.fixture(scope="module")
def synthetic_teacher(tmp_path_factory):
    """A resnet8 teacher trained to ~100 % on the synthetic task (6 epochs, a few seconds), and its config."""
    root = tmp_path_factory.mktemp("synthetic_teacher")
    data = {
        "name": "syn", "output_dir": str(root / "runs"), "device": "cpu",
        "data": {"dataset": "synthetic", "batch_size": 32, "crop_padding": 2,
                 "synthetic": {"num_train": 256, "num_test": 128, "num_classes": 4, "image_size": 12, "channels": 3}},
        "teacher": {"arch": "resnet8", "train": {"epochs": 6, "lr": 0.1, "milestones": [4]}},
        "student": {"arch": "resnet8"},
        "train": {"epochs": 6, "lr": 0.05, "milestones": [5]},
        "distill": {"method": "kd", "warmup_epochs": 1, "nd": {"weight": 1.0}},
    }  # fmt: skip
    with torch_threads(1):
        summary = pipeline.train_teacher(config_from_dict(data), progress=False)
    assert summary["test_top1_last"] > 90.0
    return data


@pytest.mark.parametrize("name", sorted(LOGIT_METHODS))
def test_logit_methods_with_nd_beat_chance_with_a_trained_teacher(synthetic_teacher, name):
    method, options, _ = LOGIT_METHODS[name]
    data = dict(synthetic_teacher, students=[{"name": name, "distill": {"method": method, "options": options}}])
    config = config_from_dict(data)
    pipeline.compute_centers(config)
    summary = pipeline.distill(config, name, progress=False)
    assert summary["test_top1_last"] > 60.0  # chance is 25 %; the student alone reaches ~100 % here


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fashion_mnist_short_test_split(source: Path, folder: Path, count: int) -> Path:
    """The real training files (linked) and the first ``count`` test images: evaluation dominates the cost of
    a one-epoch run on the full 10,000-image test split."""
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        name = next(p.name for p in (source / stem, source / f"{stem}.gz") if p.is_file())
        (folder / name).symlink_to(source / name)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        path = next(p for p in (source / stem, source / f"{stem}.gz") if p.is_file())
        _write_idx(folder / stem, read_idx(path)[:count])
    return folder


# every registered method -> the terms it logs besides ce (feature methods: tests/test_feature_pipeline.py)
METHOD_TERMS = {
    "none": set(), "kd": {"kd"}, "dkd": {"tckd", "nckd"}, "dist": {"dist_inter", "dist_intra"},
    "reviewkd": {"reviewkd"}, "fitnet": {"fitnet"}, "pefd": {"pefd"},
    "diffkd": {"diffkd_feat", "diffkd_feat_diffusion", "diffkd_ae", "diffkd_logit", "diffkd_logit_diffusion"},
}  # fmt: skip


def test_every_method_trains_on_fashion_mnist_with_and_without_nd(fashion_mnist, tmp_path):
    assert set(METHOD_TERMS) == {m.name for m in list_methods()}, "a registered method is missing from this test"
    root = fashion_mnist_short_test_split(fashion_mnist, tmp_path / "fashion-mnist", 1000)
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pt"  # untrained: this run checks the real-data path, not accuracy
    save_weights(create_model("resnet8", num_classes=10, in_channels=1), teacher, arch="resnet8")
    methods = {name: (name, {}, terms) for name, terms in METHOD_TERMS.items()} | {"kdproj": LOGIT_METHODS["kdproj"]}
    students = [
        {"name": f"{name}_nd{weight:g}", "distill": {"method": method, "options": options, "nd": {"weight": weight}}}
        for name, (method, options, _) in methods.items()
        for weight in (0.0, 1.0)
    ]
    config = {
        "name": "fm",
        "output_dir": str(tmp_path / "runs"),
        "device": "cpu",
        "data": {"dataset": "fashion_mnist", "root": str(root), "train_subset": 300, "batch_size": 50, "crop_padding": 2},
        "teacher": {"arch": "resnet8", "checkpoint": str(teacher)},
        "student": {"arch": "resnet8"},
        "train": {"epochs": 1, "lr": 0.05, "milestones": [], "log_interval": 3},
        "students": students,
    }
    assert main(["run", _write(tmp_path, config, "fm.yaml"), "--no-progress"]) == 0
    runs = tmp_path / "runs" / "fm"
    for name, (_, _, terms) in methods.items():
        for weight in (0.0, 1.0):
            run = runs / f"{name}_nd{weight:g}"
            assert json.loads((run / "summary.json").read_text())["finished"], run
            train = _records(run)[-1]["train"]
            assert set(train) == {"loss", "top1", "ce", *terms, *(["nd"] if weight else [])}, run
            assert all(train[t] > 0.0 and math.isfinite(train[t]) for t in terms), (run, train)
            assert weight == 0.0 or 0.0 < train["nd"] < 2.0, (run, train)


# ------------------------------------------------------------------------------------- ndkd methods


@dataclass
class ToyOptions:
    depth: int = 3
    mode: str = "fast"


def test_ndkd_methods_lists_every_registered_method_with_options(monkeypatch, capsys):
    # a method registered elsewhere (as part B's are) shows up without touching the command
    toy = MethodEntry("toy_method", Distiller, ToyOptions, "a toy method for this test", True)
    monkeypatch.setitem(_METHODS, "toy_method", toy)
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for entry in list_methods():
        assert f"  {entry.name}" in out and entry.description in out
    assert "depth: int = 3   mode: str = \"fast\"" in out
    assert "alpha: float = 1.0   beta: float = 8.0   temperature: float = 4.0" in out
    assert "levels: list of int = [4, 2, 1]" in out  # a part-B method's list option
    assert "temperature: float = 4.0   logit_projector: bool = false" in out
    for variant in ND_VARIANTS.values():
        assert f"  {variant.name}" in out and variant.description in out
    assert "distill.nd.temperature: float or null = null" in out and "distill.nd.delta_r: float = 1.0" in out


def test_ndkd_methods_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["methods", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "ndkd methods --json" in out


def test_ndkd_methods_json(capsys):
    assert main(["methods", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    methods = {m["name"]: m for m in listing["methods"]}
    assert set(methods) == {entry.name for entry in list_methods()}
    assert methods["dkd"]["options"] == [
        {"name": "alpha", "type": "float", "default": 1.0},
        {"name": "beta", "type": "float", "default": 8.0},
        {"name": "temperature", "type": "float", "default": 4.0},
    ]
    assert methods["none"]["options"] == [] and methods["none"]["needs_teacher"] is False
    variants = {v["name"]: v for v in listing["nd_variants"]}
    assert list(variants) == ["nd", "cosine", "infonce", "norm_l2", "sifn"]
    assert variants["sifn"]["options"] == [{"name": "delta_r", "type": "float", "default": 1.0}]
    assert variants["nd"]["options"] == []


def test_every_method_and_variant_is_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    for entry in list_methods():
        if entry.name.startswith("test_"):
            continue  # registered by other tests
        assert re.search(rf"^#+ `{entry.name}`", text, re.M), entry.name  # a section heading per method
        for option in entry.option_defaults():
            assert f"`{option}`" in text, (entry.name, option)
    for variant in ND_VARIANTS:
        assert f"`{variant}`" in text
