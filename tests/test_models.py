"""CIFAR ResNets match the shared checkpoint manifest; feature taps do not change outputs; weights load strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ndkd.errors import CheckpointError, ConfigError
from ndkd.models import FeatureTap, create_model, embedding_dim, find_classifier, load_weights, model_stages
from ndkd.models.weights import save_weights

MANIFEST = json.loads((Path(__file__).parent / "data" / "cifar_state_dict_manifest.json").read_text())
RESNETS = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4"]


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_state_dict_matches_manifest(name):
    entry = MANIFEST[name]
    with torch.device("meta"):
        model = create_model(name, num_classes=entry["num_classes"])
    ours = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert ours == entry["state_dict"]  # same keys, same order, same shapes
    assert sum(p.numel() for p in model.parameters()) == entry["params"]
    assert embedding_dim(model) == entry["embedding_dim"]


@pytest.mark.parametrize("name", ["resnet8", "resnet32x4"])
def test_stage_shapes_match_manifest(name):
    entry = MANIFEST[name]
    model = create_model(name, num_classes=100).eval()
    tap = FeatureTap(model, ("relu", "layer1", "layer2", "layer3"))
    out = tap(torch.randn(2, 3, 32, 32))
    shapes = [list(out.features[path].shape[1:]) for path in ("relu", "layer1", "layer2", "layer3")]
    assert shapes == entry["stage_shapes"]
    assert out.embedding.shape == (2, entry["embedding_dim"])


def test_tap_returns_classifier_input_and_leaves_forward_unchanged():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_channels=1).eval()
    images = torch.randn(3, 1, 28, 28)
    plain = model(images)
    tap = FeatureTap(model)
    out = tap(images)
    torch.testing.assert_close(out.logits, plain, rtol=0, atol=0)
    torch.testing.assert_close(model.fc(out.embedding), plain, rtol=0, atol=0)
    # the embedding is the pooled last stage, computed independently here
    pooled = model.layer3(model.layer2(model.layer1(model.relu(model.bn1(model.conv1(images)))))).mean(dim=(2, 3))
    torch.testing.assert_close(out.embedding, pooled, rtol=1e-5, atol=1e-6)
    tap.remove()
    torch.testing.assert_close(model(images), plain, rtol=0, atol=0)


def test_find_classifier_picks_last_linear_of_any_model():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    path, layer = find_classifier(model)
    assert path == "3" and layer.out_features == 3
    out = FeatureTap(model)(torch.randn(2, 3, 2, 2))
    assert out.embedding.shape == (2, 7)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet_20'\. Did you mean 'resnet20'\?"):
        create_model("resnet_20", num_classes=10)


def test_weights_load_from_standard_layouts_and_strip_module_prefix(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet8", num_classes=10)
    state = source.state_dict()
    layouts = {
        "plain.pt": state,
        "model.pt": {"model": state, "epoch": 240},
        "state_dict.pt": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        "model_state_dict.pt": {"model_state_dict": state, "best_acc": 70.1},
    }
    for name, payload in layouts.items():
        torch.save(payload, tmp_path / name)
        target = load_weights(create_model("resnet8", num_classes=10), tmp_path / name)
        for key, value in target.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_mismatched_checkpoint_names_keys_and_closest_architecture(tmp_path):
    save_weights(create_model("resnet14", num_classes=10), tmp_path / "r14.pt", arch="resnet14")
    with pytest.raises(CheckpointError) as caught:
        load_weights(create_model("resnet8", num_classes=10), tmp_path / "r14.pt", arch="resnet8")
    message = str(caught.value)
    assert "does not fit the resnet8 model" in message
    assert "unexpected keys: layer1.1.conv1.weight" in message
    assert "looks like a 'resnet14' checkpoint" in message
    state = create_model("resnet8", num_classes=10).state_dict()
    del state["fc.bias"]
    torch.save({"model": state}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing keys: fc.bias"):
        load_weights(create_model("resnet8", num_classes=10), tmp_path / "missing.pt")


def test_unsafe_pickles_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        load_weights(create_model("resnet8", num_classes=10), tmp_path / "evil.pt")


@pytest.mark.parametrize("name", ["resnet20", "resnet8x4"])
def test_declared_stages_and_preactivations(name):
    entry = MANIFEST[name]
    model = create_model(name, num_classes=100).eval()
    stages = model_stages(model)
    assert [s.name for s in stages] == ["stem", "layer1", "layer2", "layer3"]
    paths = tuple(s.path for s in stages) + tuple(s.preact_path for s in stages)
    out = FeatureTap(model, paths)(torch.randn(2, 3, 32, 32))
    for stage, shape in zip(stages, entry["stage_shapes"]):
        post, pre = out.features[stage.path], out.features[stage.preact_path]
        assert list(post.shape[1:]) == shape and pre.shape == post.shape
        torch.testing.assert_close(post, torch.relu(pre))  # the pre-activation is the same feature before ReLU
        assert (pre < 0).any()
