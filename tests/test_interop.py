"""Mixed teachers and students (CIFAR zoo, torchvision, timm), the projector rules, `ndkd models`, `ndkd centers import`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ndkd.centers import load_class_means, read_class_means_metadata, save_class_means
from ndkd.cli import main
from ndkd.config import DistillConfig, NDConfig
from ndkd.distillers import build_distiller
from ndkd.errors import ConfigError
from ndkd.models import create_model
from ndkd.models.projector import make_projector, resolve_projector_init
from ndkd.models.weights import save_weights


def write(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_distill_torchvision_teacher_into_cifar_zoo_student_with_nd_and_projector(tmp_path, tiny_dict, capsys):
    torch.manual_seed(0)
    save_weights(create_model("torchvision/resnet18", num_classes=4), tmp_path / "r18.pt")
    save_class_means(tmp_path / "means.safetensors", torch.randn(4, 512))
    tiny_dict["teacher"] = {"arch": "torchvision/resnet18", "checkpoint": str(tmp_path / "r18.pt")}
    tiny_dict["student"] = {"arch": "wrn_16_1"}
    tiny_dict["train"]["epochs"] = 1
    tiny_dict["distill"]["nd"] = {"weight": 1.0, "class_means": str(tmp_path / "means.safetensors")}
    assert main(["distill", write(tmp_path, tiny_dict), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "nd weight 1.0 with projector" in err  # 64-d student, 512-d teacher
    run = tmp_path / "runs" / "tiny" / "student"
    terms = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["train"]
    assert {"ce", "kd", "nd"} <= set(terms) and all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["student"]
    assert state["nd.projector.2.weight"].shape == (512, 64)
    exported = torch.load(run / "student.pt", weights_only=True)["model"]
    assert not any(key.startswith("nd.") for key in exported)  # the projector is not part of the student


def test_cifar_zoo_teacher_and_torchvision_student_share_width_so_no_projector():
    teacher = create_model("ResNet18", num_classes=5)  # CIFAR ResNet-18, 512-d
    student = create_model("torchvision/resnet18", num_classes=5)  # ImageNet ResNet-18, 512-d
    config = DistillConfig(method="kd", nd=NDConfig(weight=1.0))
    distiller = build_distiller(config, student, teacher, torch.randn(5, 512), input_shape=(3, 32, 32))
    assert distiller.nd.projector is None
    labels = torch.arange(4) % 5
    logits, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), labels, epoch=0)
    assert logits.shape == (4, 5) and set(losses) == {"ce", "kd", "nd"}
    sum(losses.values()).backward()
    assert student.fc.weight.grad is not None and teacher.linear.weight.grad is None


def test_timm_models_as_teacher_and_student():
    pytest.importorskip("timm")
    teacher = create_model("timm/test_vit", num_classes=3)  # 64-d pre-logits
    student = create_model("timm/test_resnet", num_classes=3)  # 96-d
    config = DistillConfig(method="kd", nd=NDConfig(weight=1.0))
    distiller = build_distiller(config, student, teacher, torch.randn(3, 64), input_shape=(3, 32, 32))
    assert distiller.nd.projector[2].weight.shape == (64, 96)
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), epoch=0)
    assert torch.isfinite(sum(losses.values()))


def test_unknown_timm_name_suggests_close_names():
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match=r"timm has no model 'resnet_18'\. Did you mean .*timm/resnet18"):
        create_model("timm/resnet_18", num_classes=3)


def test_projector_init_follows_the_rules():
    assert resolve_projector_init("auto", (3, 32, 32)) == "cifar"
    assert resolve_projector_init("auto", (3, 224, 224)) == "imagenet"
    assert resolve_projector_init("auto", None) == "cifar"
    assert resolve_projector_init("imagenet", (1, 28, 28)) == "imagenet"
    torch.manual_seed(0)
    imagenet = make_projector(512, 2048, init="imagenet")
    cifar = make_projector(512, 2048, init="cifar")
    for projector in (imagenet, cifar):
        assert torch.equal(projector[0].weight, torch.ones(512)) and torch.equal(projector[0].bias, torch.zeros(512))
        assert projector[1].p == 0.5
    assert abs(imagenet[2].weight.std().item() - 0.01) < 5e-4 and abs(imagenet[2].bias.std().item() - 0.01) < 2e-3
    bound = 1 / 512**0.5  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert cifar[2].weight.abs().max().item() <= bound and cifar[2].weight.std().item() > 0.5 * bound / 3**0.5
    assert torch.equal(cifar[2].bias, torch.zeros(2048))


def test_nd_projector_init_is_chosen_from_the_input_size_and_config():
    student, teacher = create_model("resnet8", 4), create_model("resnet8x4", 4)
    means = torch.randn(4, 256)
    small = build_distiller(DistillConfig(method="kd", nd=NDConfig(weight=1.0)), student, teacher, means, (3, 32, 32))
    large = build_distiller(DistillConfig(method="kd", nd=NDConfig(weight=1.0)), student, teacher, means, (3, 96, 96))
    forced = build_distiller(DistillConfig(method="kd", nd=NDConfig(weight=1.0, projector_init="cifar")), student, teacher, means, (3, 96, 96))
    assert torch.equal(small.nd.projector[2].bias, torch.zeros(256)) and torch.equal(forced.nd.projector[2].bias, torch.zeros(256))
    assert large.nd.projector[2].bias.abs().sum() > 0 and large.nd.projector[2].weight.std() < 0.02


def test_ndkd_models_lists_every_architecture_with_numbers(capsys):
    assert main(["models", "--family", "cifar", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    from ndkd.models.cifar import load_manifest

    for name, entry in load_manifest().items():
        assert rows[name]["params"] == entry["params"] and rows[name]["embedding_dim"] == entry["embedding_dim"]
        assert [list(s["shape"]) for s in rows[name]["stages"]] == entry["stage_shapes"]
    # resnet20 at 32x32: multiply-adds of the convolutions and the Linear, counted by hand, 2 FLOPs each
    expected = 2 * (
        32 * 32 * 16 * 3 * 9  # stem
        + 6 * 32 * 32 * 16 * 16 * 9  # layer1: six 3x3 convs 16->16
        + 16 * 16 * 32 * 16 * 9 + 5 * 16 * 16 * 32 * 32 * 9 + 16 * 16 * 32 * 16  # layer2 + 1x1 shortcut
        + 8 * 8 * 64 * 32 * 9 + 5 * 8 * 8 * 64 * 64 * 9 + 8 * 8 * 64 * 32  # layer3 + 1x1 shortcut
        + 64 * 100  # fc
    )
    assert rows["resnet20"]["mflops"] == pytest.approx(expected / 1e6)
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    for name in ("wrn_40_2", "ShuffleV1", "torchvision/resnet50", "mobilenetv1"):
        assert name in table
    line = next(row for row in table.splitlines() if row.startswith("torchvision/resnet18 "))
    assert "224x224" in line and "11.69" in line and "512" in line and "64/64/128/256/512" in line and "3,628.1" in line


def test_ndkd_models_features_shows_stage_paths(capsys):
    assert main(["models", "--features", "wrn40_2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrn_40_2: CIFAR Wide ResNet-40-2; input 32x32, 2.26 M parameters")
    assert "embedding: 128-d" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert rows[0] == ["stage", "module", "pre-activation", "shape", "(one", "image)"]
    assert rows[2] == ["stem", "block1.layer.0.relu1", "block1.layer.0.bn1", "16x32x32"]
    assert rows[-1] == ["layer3", "relu", "bn1", "128x8x8"]
    assert main(["models", "--features", "nonexistent_net"]) == 2
    assert "unknown model 'nonexistent_net'" in capsys.readouterr().err


def test_centers_import_converts_official_json(tmp_path, capsys):
    means = torch.randn(3, 64)
    official = {str(k): means[k].tolist() for k in (2, 0, 1)}  # any key order
    (tmp_path / "r56.json").write_text(json.dumps(official))
    save_weights(create_model("resnet56", num_classes=3), tmp_path / "r56.pt")
    argv = ["centers", "import", str(tmp_path / "r56.json"), "--teacher", "resnet56", "--checkpoint", str(tmp_path / "r56.pt"), "--dataset", "cifar100"]
    assert main(argv) == 0
    out = tmp_path / "r56.safetensors"
    assert capsys.readouterr().out.strip() == str(out)
    torch.testing.assert_close(load_class_means(out, num_classes=3, dim=64), means)
    metadata = read_class_means_metadata(out)
    assert metadata["teacher"] == "resnet56" and metadata["dataset"] == "cifar100" and metadata["dim"] == "64"
    assert len(metadata["teacher_sha256"]) == 64 and metadata["imported_from"] == str(tmp_path / "r56.json")
    # a file for another teacher is refused with the widths
    assert main(["centers", "import", str(tmp_path / "r56.json"), "--teacher", "resnet32x4", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "holds 64-d class-means but resnet32x4 embeddings are 256-d" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_centers_config_form_still_works_next_to_import(tmp_path, tiny_dict, random_teacher, capsys):
    tiny_dict["teacher"]["checkpoint"] = str(random_teacher)
    assert main(["centers", write(tmp_path, tiny_dict)]) == 0
    path = capsys.readouterr().out.strip()
    assert json.loads(read_class_means_metadata(path)["class_names"]) == [f"class_{k}" for k in range(4)]


@pytest.mark.parametrize("argv, example", [(["models", "--help"], "ndkd models --features wrn_40_2"), (["centers", "import", "--help"], "ndkd centers import resnet56_cifar100.json --teacher resnet56")])
def test_new_commands_have_help_with_examples(argv, example, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and example in out
