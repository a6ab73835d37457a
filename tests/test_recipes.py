"""The shipped paper recipes (configs/cifar100, configs/imagenet) match the official KD++ tables, and `ndkd recipes`.

The tables below are written from METHOD_KDPP.md §6.1 / §6.2 (official per-pair weights and the claimed
top-1 of the KD++ README), independently of the YAML files, and every shipped recipe is compared with them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ndkd.cli import main
from ndkd.config import load_config
from ndkd.distillers import build_distiller, get_method
from ndkd.models import create_model, embedding_dim
from ndkd.pipeline import student_config, student_names
from ndkd.recipes import default_recipes_dir, list_recipes

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# METHOD_KDPP.md §6.1. Per pair: teacher, student, lr, KD++ (λ_kd, λ_nd), DKD++ (α, β, λ_nd), DIST++ (λ_kd, λ_nd),
# ReviewKD++ (λ_kd, λ_nd), claimed teacher top-1, claimed top-1 of: student alone, KD, KD++, DKD, DKD++, DIST, DIST++,
# ReviewKD, ReviewKD++.
CIFAR = {
    "resnet56_resnet20": ("resnet56", "resnet20", 0.1, (1.0, 2.0), (2.5, 4.0, 3.5), (2.0, 1.0), (1.2, 1.0), 72.34,
                          (69.06, 70.66, 72.53, 71.97, 72.16, 71.78, 72.52, 71.89, 72.05)),
    "wrn_40_2_wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.1, (1.0, 1.5), (1.0, 6.0, 1.0), (2.5, 3.0), (5.0, 4.0), 75.61,
                          (71.98, 73.54, 74.59, 74.81, 75.02, 74.42, 75.00, 75.09, 75.66)),
    "resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4", 0.1, (3.5, 2.0), (2.0, 8.0, 0.5), (1.5, 4.0), (8.0, 1.0), 79.42,
                             (72.50, 73.33, 75.54, 75.44, 76.28, 75.79, 76.13, 75.63, 76.07)),
    "resnet50_mobilenetv2": ("ResNet50", "MobileNetV2", 0.02, (3.0, 0.5), (0.5, 8.0, 1.0), (7.0, 1.0), (6.0, 2.0), 79.34,
                             (64.60, 67.65, 70.10, 70.35, 70.82, 69.17, 69.80, 69.89, 70.45)),
    "resnet32x4_shufflev1": ("resnet32x4", "ShuffleV1", 0.02, (2.5, 1.5), (0.5, 8.0, 4.0), (2.5, 3.0), (7.0, 1.0), 79.42,
                             (70.50, 74.07, 75.45, 76.45, 77.11, 75.23, 75.60, 77.45, 77.68)),
    "resnet32x4_shufflev2": ("resnet32x4", "ShuffleV2", 0.02, (4.0, 0.5), (0.5, 6.0, 0.5), (3.0, 4.0), (8.0, 1.5), 79.42,
                             (71.82, 74.45, 76.42, 77.07, 77.49, 76.08, 76.64, 77.78, 77.93)),
}  # fmt: skip
CIFAR_STUDENTS = ["student", "kd", "kdpp", "dkd", "dkdpp", "dist", "distpp", "reviewkd", "reviewkdpp"]
CIFAR_TEACHER_FILES = {"resnet56": "resnet56_vanilla", "wrn_40_2": "wrn_40_2_vanilla", "resnet32x4": "resnet32x4_vanilla", "ResNet50": "ResNet50_vanilla"}
PROJECTED_CIFAR_STUDENTS = {"wrn_40_1", "MobileNetV2", "ShuffleV1", "ShuffleV2"}  # METHOD_KDPP.md §4

# METHOD_KDPP.md §6.2 (R50 -> MV1 ReviewKD++ 8.0/4.0 of the README; R101 -> R18 DKD++ λ_nd 1.0 of train.sh's table).
# Per pair: teacher, student, teacher file, KD++ (λ_kd, λ_nd), DKD++ (α, β, λ_nd), ReviewKD++ (λ_kd, λ_nd), claimed
# teacher top-1, claimed top-1 of KD, KD++, DKD, DKD++, ReviewKD, ReviewKD++ (R34/MV1: README table; R50/R101/R152: 5-run figure).
IMAGENET = {
    "resnet34_resnet18": ("torchvision/resnet34", "torchvision/resnet18", "resnet34-333f7ec4.pth", (2.5, 1.0), (0.8, 0.5, 1.0),
                          (1.0, 3.0), 73.31, (70.66, 71.98, 71.70, 72.07, 71.62, 71.64)),
    "resnet50_resnet18": ("torchvision/resnet50", "torchvision/resnet18", "resnet50-19c8e357.pth", (4.0, 1.0), (0.6, 0.5, 2.0),
                          (3.0, 2.0), 76.16, (71.35, 72.49, 71.85, 72.11, 71.09, 71.73)),
    "resnet101_resnet18": ("torchvision/resnet101", "torchvision/resnet18", "resnet101-5d3b4d8f.pth", (3.5, 4.0), (0.8, 0.5, 1.0),
                           (3.0, 1.0), 77.37, (71.09, 72.54, 72.08, 72.29, 70.95, 71.79)),
    "resnet152_resnet18": ("torchvision/resnet152", "torchvision/resnet18", "resnet152-b121ed2d.pth", (4.0, 2.0), (1.0, 1.0, 1.0),
                           (3.0, 1.0), 78.31, (71.13, 72.59, 71.87, 72.47, 71.39, 71.86)),
    "resnet50_mobilenetv1": ("torchvision/resnet50", "mobilenetv1", "resnet50-19c8e357.pth", (4.0, 1.0), (0.8, 1.0, 1.0),
                             (8.0, 4.0), 76.16, (70.50, 72.77, 72.05, 72.63, 72.56, 72.96)),
}  # fmt: skip
IMAGENET_STUDENTS = ["kd", "kdpp", "dkd", "dkdpp", "reviewkd", "reviewkdpp"]
LOSS_TERMS = {"none": set(), "kd": {"kd"}, "dkd": {"tckd", "nckd"}, "dist": {"dist_inter", "dist_intra"}, "reviewkd": {"reviewkd"}}


def expected_cifar(pair: str) -> dict[str, dict]:
    """Student name -> method, weight, options, nd weight, claimed top-1 (one table row)."""
    _, _, _, kd, dkd, dist, rkd, _, claimed = CIFAR[pair]
    kd_opts, dkd_opts = {"temperature": 4.0}, {"alpha": dkd[0], "beta": dkd[1], "temperature": 4.0}
    dist_opts = {"beta": 1.0, "gamma": 1.0, "tau": 4.0}
    rows = [("none", None, {}, 0.0), ("kd", kd[0], kd_opts, 0.0), ("kd", kd[0], kd_opts, kd[1]), ("dkd", 1.0, dkd_opts, 0.0),
            ("dkd", 1.0, dkd_opts, dkd[2]), ("dist", dist[0], dist_opts, 0.0), ("dist", dist[0], dist_opts, dist[1]),
            ("reviewkd", rkd[0], {}, 0.0), ("reviewkd", rkd[0], {}, rkd[1])]  # fmt: skip
    return {name: dict(method=m, weight=w, options=o, nd=nd, nd_warmup=False, claimed=c)
            for name, (m, w, o, nd), c in zip(CIFAR_STUDENTS, rows, claimed)}  # fmt: skip


def expected_imagenet(pair: str) -> dict[str, dict]:
    _, _, _, kd, dkd, rkd, _, claimed = IMAGENET[pair]
    kd_opts, dkd_opts = {"temperature": 1.0}, {"alpha": dkd[0], "beta": dkd[1], "temperature": 1.0}
    rows = [("kd", kd[0], kd_opts, 0.0, False), ("kd", kd[0], kd_opts, kd[1], False), ("dkd", 1.0, dkd_opts, 0.0, True),
            ("dkd", 1.0, dkd_opts, dkd[2], True), ("reviewkd", rkd[0], {}, 0.0, False), ("reviewkd", rkd[0], {}, rkd[1], False)]  # fmt: skip
    return {name: dict(method=m, weight=w, options=o, nd=nd, nd_warmup=warm, claimed=c)
            for name, (m, w, o, nd, warm), c in zip(IMAGENET_STUDENTS, rows, claimed)}  # fmt: skip


def check_student(config, want: dict) -> None:
    distill = config.distill
    assert distill.method == want["method"]
    if want["weight"] is not None:
        assert distill.weight == pytest.approx(want["weight"])
    for key, value in want["options"].items():
        assert distill.options[key] == pytest.approx(value), key
    assert distill.ce_weight == 1.0
    assert distill.nd.weight == pytest.approx(want["nd"])
    assert (distill.nd.variant, distill.nd.warmup, distill.nd.class_means) == ("nd", want["nd_warmup"], None)
    assert config.recipe.claimed_top1 == pytest.approx(want["claimed"])


def test_shipped_pairs_and_students_are_exactly_the_tables():
    assert sorted(p.stem for p in (CONFIGS / "cifar100").glob("*.yaml")) == sorted(CIFAR)
    assert sorted(p.stem for p in (CONFIGS / "imagenet").glob("*.yaml")) == sorted(IMAGENET)
    for folder, names in (("cifar100", CIFAR_STUDENTS), ("imagenet", IMAGENET_STUDENTS)):
        for path in (CONFIGS / folder).glob("*.yaml"):
            assert student_names(load_config(path)) == names, path.name


@pytest.mark.parametrize("pair", sorted(CIFAR))
def test_cifar_recipe_matches_official_table(pair):
    teacher, student, lr, *_, teacher_top1, _ = CIFAR[pair]
    base = load_config(CONFIGS / "cifar100" / f"{pair}.yaml")
    assert base.teacher.checkpoint == f"teachers/cifar_teachers/{CIFAR_TEACHER_FILES[teacher]}/ckpt_epoch_240.pth"
    for name, want in expected_cifar(pair).items():
        config = student_config(base, name)
        assert (config.teacher.arch, config.student.arch) == (teacher, student)
        data = config.data
        assert (data.dataset, data.root, data.batch_size, data.augment, data.crop_padding, data.hflip) == ("cifar100", "data", 128, True, 4, True)
        train = config.train
        assert (train.epochs, train.milestones, train.momentum, train.nesterov) == (240, [150, 180, 210], 0.9, True)
        assert (train.lr, train.weight_decay, train.lr_decay) == (pytest.approx(lr), pytest.approx(5e-4), pytest.approx(0.1))
        assert config.distill.warmup_epochs == 20 and config.centers.augment
        assert config.recipe.claimed_teacher_top1 == pytest.approx(teacher_top1)
        assert config.recipe.source
        check_student(config, want)


@pytest.mark.parametrize("pair", sorted(IMAGENET))
def test_imagenet_recipe_matches_official_table(pair):
    teacher, student, teacher_file, *_, teacher_top1, _ = IMAGENET[pair]
    base = load_config(CONFIGS / "imagenet" / f"{pair}.yaml")
    assert base.teacher.checkpoint == f"teachers/imagenet/{teacher_file}"
    for name, want in expected_imagenet(pair).items():
        config = student_config(base, name)
        assert (config.teacher.arch, config.student.arch) == (teacher, student)
        data, folder = config.data, config.data.imagefolder
        assert (data.dataset, data.root, data.batch_size, data.augment, data.hflip) == ("imagefolder", "data/imagenet", 512, True, True)
        assert (folder.train_dir, folder.val_dir, folder.image_size, folder.resize_size, folder.min_scale) == ("train", "val", 224, 256, 0.08)
        train = config.train
        assert (train.epochs, train.milestones, train.momentum, train.nesterov) == (100, [30, 60, 90], 0.9, True)
        assert (train.lr, train.weight_decay, train.lr_decay) == (pytest.approx(0.2), pytest.approx(1e-4), pytest.approx(0.1))
        assert config.distill.warmup_epochs == 5 and config.centers.augment
        assert config.recipe.claimed_teacher_top1 == pytest.approx(teacher_top1)
        check_student(config, want)


def test_recipes_json_lists_every_row_with_its_numbers(capsys):
    assert main(["recipes", str(CONFIGS), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    expected = {f"cifar100/{pair}:{name}": (CIFAR[pair], want) for pair in CIFAR for name, want in expected_cifar(pair).items()}
    expected |= {f"imagenet/{pair}:{name}": (IMAGENET[pair], want) for pair in IMAGENET for name, want in expected_imagenet(pair).items()}
    assert {name for name in rows if name.startswith(("cifar100/", "imagenet/"))} == set(expected)
    for name, (table, want) in expected.items():
        row = rows[name]
        cifar = name.startswith("cifar100/")
        assert (row["teacher"], row["student"], row["method"]) == (table[0], table[1], want["method"])
        assert row["dataset"] == ("cifar100" if cifar else "imagefolder")
        assert row["weight"] == (None if want["method"] == "none" else pytest.approx(want["weight"]))
        assert all(row["options"][key] == pytest.approx(value) for key, value in want["options"].items())
        assert row["nd_weight"] == pytest.approx(want["nd"]) and row["nd_warmup"] == want["nd_warmup"]
        assert row["nd_variant"] == ("nd" if want["nd"] > 0 else None)
        assert (row["lr"], row["batch_size"], row["epochs"]) == ((table[2], 128, 240) if cifar else (0.2, 512, 100))
        assert row["warmup_epochs"] == (20 if cifar else 5)
        assert row["claimed_top1"] == pytest.approx(want["claimed"])
        assert row["claimed_teacher_top1"] == pytest.approx(table[-2])


def test_recipes_text_table_of_one_file(capsys):
    assert main(["recipes", str(CONFIGS / "imagenet" / "resnet50_resnet18.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["recipe", "dataset", "teacher", "student", "method", "ND"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == [f"resnet50_resnet18:{name}" for name in IMAGENET_STUDENTS]
    assert rows["resnet50_resnet18:dkdpp"][4:] == ["dkd", "nd", "2", "(ramped)", "weight=1", "alpha=0.6", "beta=0.5", "temperature=1", "0.2", "512", "100", "5", "72.11"]
    assert rows["resnet50_resnet18:kd"][4:] == ["kd", "-", "weight=4", "temperature=1", "0.2", "512", "100", "5", "71.35"]


def test_recipes_missing_or_empty_dir_is_a_one_line_error(tmp_path, capsys):
    assert main(["recipes", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "nope" in err
    assert main(["recipes", str(tmp_path)]) == 2
    assert "no recipe (*.yaml)" in capsys.readouterr().err


def test_default_recipes_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_recipes_dir() == CONFIGS  # no ./configs: the source checkout's
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("name: mine\nstudents: [{name: a}, {name: b, distill: {method: kd}}]\n")
    assert default_recipes_dir() == Path("configs")
    assert [(row.name, row.method, row.weight) for row in list_recipes()] == [("mine:a", "none", None), ("mine:b", "kd", 1.0)]


@pytest.fixture
def one_thread():
    """One intra-op thread: these tiny forwards are far slower with two threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def forward_all(config, names: list[str], num_classes: int, input_shape: tuple[int, int, int], projected: bool) -> None:
    """Build each student's distiller with the zoo models and random class-means; one forward_train of 2 images.

    ``projected``: whether ND needs the projector (the student's embedding is narrower or wider than the teacher's).
    """
    torch.manual_seed(0)
    teacher = create_model(config.teacher.arch, num_classes=num_classes)
    class_means = torch.rand(num_classes, embedding_dim(teacher))
    images, labels = torch.randn(2, *input_shape), torch.tensor([3, 7])
    for name in names:
        student_cfg = student_config(config, name)
        distill = student_cfg.distill
        student = create_model(student_cfg.student.arch, num_classes=num_classes)
        uses_teacher = get_method(distill.method).needs_teacher or distill.nd.weight > 0
        distiller = build_distiller(distill, student, teacher if uses_teacher else None, class_means, input_shape).train()
        epoch = distill.warmup_epochs // 2  # half-way up the ramp: every term is on
        logits, losses = distiller.forward_train(images, labels, epoch=epoch)
        assert logits.shape == (2, num_classes)
        assert set(losses) == {"ce"} | LOSS_TERMS[distill.method] | ({"nd"} if distill.nd.weight > 0 else set()), name
        assert all(math.isfinite(value.item()) and value.item() >= 0 for value in losses.values()), (name, losses)
        if distill.nd.weight > 0:  # each sample's ND lies in [0, 2]; DKD++ on ImageNet ramps it with DKD
            ramp = distiller.warmup_factor(epoch) if distill.nd.warmup else 1.0
            assert 0 < losses["nd"].item() <= 2 * distill.nd.weight * ramp + 1e-6
            assert (distiller.nd.projector is not None) == projected, name


# Every method of each CIFAR pair: the student alone and the ++ students (a baseline is its ++ student's modules
# without ND, and its config is checked above), one forward each, to stay within seconds on a 2-core CPU.
@pytest.mark.parametrize("pair", sorted(CIFAR))
def test_cifar_recipe_distillers_build_and_train(pair, one_thread):
    config = load_config(CONFIGS / "cifar100" / f"{pair}.yaml")
    names = ["student", "kdpp", "dkdpp", "distpp", "reviewkdpp"]
    forward_all(config, names, 100, (3, 32, 32), projected=CIFAR[pair][1] in PROJECTED_CIFAR_STUDENTS)


# ImageNet, kept to a few seconds on a CPU: 64 x 64 images instead of 224 x 224, the ++ students only (a baseline
# is the same modules without ND), and two pairs that hold every architecture and both projector cases: R34 -> R18
# (basic blocks on both sides, no projector) and R50 -> MV1 (bottleneck teacher, projector). R50/R101/R152 -> R18
# pair R18 with a teacher of R50's stage widths and 2048-d embedding, so they build the same modules.
@pytest.mark.parametrize("pair", ["resnet34_resnet18", "resnet50_mobilenetv1"])
def test_imagenet_recipe_distillers_build_and_train(pair, one_thread):
    config = load_config(CONFIGS / "imagenet" / f"{pair}.yaml")
    forward_all(config, ["kdpp", "dkdpp", "reviewkdpp"], 1000, (3, 64, 64), projected=pair != "resnet34_resnet18")
