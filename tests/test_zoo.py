"""The CIFAR zoo matches the shared checkpoint manifest; every family's features are tapped without changing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ndkd.errors import CheckpointError, ConfigError
from ndkd.models import FeatureTap, create_model, embedding_dim, find_classifier, load_weights, model_stages
from ndkd.models.cifar import load_manifest
from ndkd.models.registry import canonical_name
from ndkd.models.weights import save_weights

MANIFEST = json.loads((Path(__file__).parent / "data" / "cifar_state_dict_manifest.json").read_text())
# one model per family (module of the zoo), each with its own stage declaration
FAMILIES = ["resnet20", "ResNet18", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "mobilenetv1", "torchvision/resnet18", "torchvision/resnet50", "torchvision/mobilenet_v2"]  # fmt: skip


def test_packaged_manifest_is_the_reference_manifest():
    assert load_manifest() == MANIFEST


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_manifest_architecture_matches_keys_shapes_params_embedding_and_stages(name):
    entry = MANIFEST[name]
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = create_model(name, num_classes=entry["num_classes"]).eval()
        stages = model_stages(model)
        out = FeatureTap(model, tuple(s.path for s in stages))(torch.empty(2, 3, 32, 32))
    assert [[key, list(value.shape)] for key, value in model.state_dict().items()] == entry["state_dict"]  # same order too
    assert sum(p.numel() for p in model.parameters()) == entry["params"]
    assert embedding_dim(model) == entry["embedding_dim"] == out.embedding.shape[1]
    assert [list(out.features[s.path].shape[1:]) for s in stages] == entry["stage_shapes"]
    assert [s.name for s in stages][0] == "stem"


@pytest.mark.parametrize(
    "alias, name",
    [("mobilenetv2", "MobileNetV2"), ("mobile_half", "MobileNetV2"), ("shufflenetv1", "ShuffleV1"), ("shufflenetv2", "ShuffleV2"),
     ("wrn40_2", "wrn_40_2"), ("wrn-16-1", "wrn_16_1"), ("vgg13_bn", "vgg13"), ("cifar_resnet18", "ResNet18"), ("MobileNetV1", "mobilenetv1")],
)  # fmt: skip
def test_lower_case_aliases(alias, name):
    assert canonical_name(alias) == name
    assert type(create_model(alias, num_classes=3)) is type(create_model(name, num_classes=3))


def test_ambiguous_lower_case_name_lists_both_resnet18s():
    with pytest.raises(ConfigError) as caught:
        create_model("resnet18", num_classes=10)
    message = str(caught.value)
    assert "unknown model 'resnet18'. Names are case-sensitive" in message
    assert "'ResNet18' (CIFAR ResNet-18" in message and "'torchvision/resnet18' (torchvision ImageNet ResNet-18)" in message


@pytest.mark.parametrize("name", FAMILIES)
def test_tapping_features_leaves_outputs_identical_and_preactivations_are_consistent(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    side = 32 if "/" in name or name == "mobilenetv1" else 16  # small, but every stage keeps at least 1x1
    images = torch.randn(1, 3, side, side)
    with torch.no_grad():
        plain = model(images)
        stages = model_stages(model)
        paths = tuple(s.path for s in stages) + tuple(s.preact_path for s in stages if s.preact_path)
        tap = FeatureTap(model, paths)
        out = tap(images)
        tap.remove()
        after = model(images)
    assert torch.equal(out.logits, plain) and torch.equal(after, plain)
    _, classifier = find_classifier(model)
    torch.testing.assert_close(classifier(out.embedding), plain, rtol=1e-5, atol=1e-5)
    for stage in stages:
        if stage.preact_path:
            pre, post = out.features[stage.preact_path], out.features[stage.path]
            torch.testing.assert_close(post, torch.relu(pre))
            assert (pre < 0).any(), stage  # really read before the ReLU
    sides = [out.features[s.path].shape[-1] for s in stages]
    assert sides == sorted(sides, reverse=True)  # stem first, resolution never grows


def test_training_gradients_flow_through_tapped_preactivations():
    model = create_model("torchvision/resnet18", num_classes=5)
    stages = model_stages(model)
    tap = FeatureTap(model, (stages[-1].preact_path,))
    out = tap(torch.randn(2, 3, 32, 32))
    out.features[stages[-1].preact_path].square().mean().backward()
    assert model.layer4[1].conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["wrn_40_1", "ShuffleV2", "MobileNetV2", "vgg8", "torchvision/resnet18", "mobilenetv1"])
def test_in_channels_option_for_one_channel_images(name):
    model = create_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)


def test_standard_checkpoint_layout_loads_strictly_into_every_family(tmp_path):
    for name in ["wrn_40_2", "vgg8", "ShuffleV1", "MobileNetV2"]:
        torch.manual_seed(1)
        source = create_model(name, num_classes=100)
        torch.save({"model": source.state_dict(), "epoch": 240, "accuracy": 76.3}, tmp_path / "ckpt_epoch_240.pth")
        target = load_weights(create_model(name, num_classes=100), tmp_path / "ckpt_epoch_240.pth", arch=name)
        assert all(torch.equal(value, source.state_dict()[key]) for key, value in target.state_dict().items())


@pytest.mark.parametrize(
    "written, loaded",
    [("wrn_40_2", "wrn_16_2"), ("vgg13", "vgg8"), ("ShuffleV2", "ShuffleV1"), ("resnet32x4", "resnet8x4"), ("torchvision/resnet34", "torchvision/resnet18")],
)  # fmt: skip
def test_file_of_another_architecture_names_the_closest(tmp_path, written, loaded):
    save_weights(create_model(written, num_classes=10), tmp_path / "other.pt")  # 10 classes: the manifest has 100
    with pytest.raises(CheckpointError) as caught:
        load_weights(create_model(loaded, num_classes=10), tmp_path / "other.pt", arch=loaded)
    message = str(caught.value)
    assert f"does not fit the {loaded} model" in message
    assert f"The file looks like a {written!r} checkpoint; set the architecture to {written!r}" in message


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file

    source = create_model("vgg8", num_classes=4)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    target = load_weights(create_model("vgg8", num_classes=4), tmp_path / "model.safetensors")
    assert torch.equal(target.classifier.weight, source.classifier.weight)
