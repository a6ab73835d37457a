"""ReviewKD, FitNet and PEFD distillers: the features they read, their adapters, ND composition."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndkd.config import DistillConfig, NDConfig, config_from_dict
from ndkd.distillers import build_distiller
from ndkd.distillers.fitnet import ConvRegressor
from ndkd.errors import ConfigError
from ndkd.losses import fitnet_loss, hcl_loss, nd_loss, pefd_loss
from ndkd.models import Stage, create_model

INPUT = (3, 8, 8)
FEATURE_METHODS = ("reviewkd", "fitnet", "pefd", "diffkd")


def _build(method, teacher_arch="resnet8x4", options=None, nd_weight=0.0, student=None, teacher=None):
    torch.manual_seed(0)
    student = student or create_model("resnet8", 4)
    teacher = teacher or create_model(teacher_arch, 4)
    class_means = torch.rand(4, teacher.fc.in_features) + 0.1 if nd_weight > 0 else None
    config = DistillConfig(method=method, options=options or {}, nd=NDConfig(weight=nd_weight))
    return build_distiller(config, student, teacher, class_means, INPUT).train()


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, *INPUT, generator=generator), torch.arange(4)


def _outputs(model, paths):
    """Module outputs captured with hooks registered here, independently of the distiller's taps."""
    captured, handles = {}, []
    modules = dict(model.named_modules())
    for path in paths:
        handles.append(modules[path].register_forward_hook(lambda m, i, o, path=path: captured.__setitem__(path, o)))
    return captured, handles


class TwoStageNet(nn.Module):
    """A model outside the zoo: stem + two stages, declares its stages, no pre-activation points."""

    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(12, 20, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(20, classes)

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))).mean(dim=(2, 3)))

    def feature_stages(self):
        return [Stage("stem", "stem"), Stage("block1", "block1"), Stage("block2", "block2")]


# -- ReviewKD -----------------------------------------------------------------------------------------


def test_reviewkd_reads_teacher_preactivations_and_student_outputs():
    distiller = _build("reviewkd")
    teacher, student = distiller.teacher, distiller.student
    preact_paths = ["layer1.0.residual_sum", "layer2.0.residual_sum", "layer3.0.residual_sum"]
    t_pre, handles = _outputs(teacher, preact_paths + ["layer1", "layer2", "layer3", "avgpool"])
    s_post, more = _outputs(student, ["layer1", "layer2", "layer3"])
    images, labels = _batch()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    for handle in handles + more:
        handle.remove()
    teacher_maps = distiller.teacher_maps(distiller.teacher_tap(images))
    for path, used, post in zip(preact_paths, teacher_maps, ("layer1", "layer2", "layer3")):
        torch.testing.assert_close(used, t_pre[path])
        assert (used < 0).any()  # before the ReLU ...
        torch.testing.assert_close(torch.relu(used), t_pre[post])  # ... of exactly this stage output
    torch.testing.assert_close(teacher_maps[-1], t_pre["avgpool"])  # the pooled embedding as a 1 x 1 map
    student_maps = [s_post["layer1"], s_post["layer2"], s_post["layer3"], distiller.student_tap(images).embedding[:, :, None, None]]
    expected = hcl_loss(distiller.fuse(student_maps), teacher_maps)
    torch.testing.assert_close(losses["reviewkd"], expected)


def test_reviewkd_abf_shapes_and_widths_come_from_the_models():
    distiller = _build("reviewkd")  # resnet8 (16/32/64, emb 64) -> resnet8x4 (64/128/256, emb 256)
    assert [abf.reduce[0].in_channels for abf in distiller.abfs] == [16, 32, 64, 64]
    assert [abf.output[0].out_channels for abf in distiller.abfs] == [64, 128, 256, 256]
    assert {abf.reduce[0].out_channels for abf in distiller.abfs} == {64}  # min(512, student embedding width)
    assert [abf.attention is not None for abf in distiller.abfs] == [True, True, True, False]  # deepest has no residual
    images, _ = _batch()
    fused = distiller.fuse(distiller.student_maps(distiller.student_tap(images)))
    assert [tuple(f.shape) for f in fused] == [(4, 64, 8, 8), (4, 128, 4, 4), (4, 256, 2, 2), (4, 256, 1, 1)]
    narrow = _build("reviewkd", options={"max_mid_channels": 24})
    assert {abf.reduce[0].out_channels for abf in narrow.abfs} == {24}


def test_abf_mixes_stage_and_upsampled_residual_with_attention_weights():
    distiller = _build("reviewkd")
    abf = distiller.abfs[1].eval()
    nn.init.zeros_(abf.attention[0].weight)
    nn.init.zeros_(abf.attention[0].bias)  # sigmoid(0) = 0.5 for both maps
    x, residual = torch.randn(2, 32, 4, 4), torch.randn(2, 64, 2, 2)
    out, fused = abf(x, residual, (4, 4))
    upsampled = residual.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest neighbour x2
    torch.testing.assert_close(fused, 0.5 * abf.reduce(x) + 0.5 * upsampled)
    torch.testing.assert_close(out, abf.output(fused))


def test_reviewkd_pairs_the_deepest_stages_of_models_outside_the_zoo():
    torch.manual_seed(0)
    distiller = _build("reviewkd", student=TwoStageNet(), teacher=create_model("resnet8x4", 4), options={"student_preact": False})
    assert distiller.student_tap.feature_paths == ("block1", "block2")
    images, labels = _batch()
    teacher_maps = distiller.teacher_maps(distiller.teacher_tap(images))
    assert [tuple(m.shape[1:]) for m in teacher_maps] == [(128, 4, 4), (256, 2, 2), (256, 1, 1)]  # layer2, layer3, emb
    _, losses = distiller.forward_train(images, labels, epoch=0)
    assert torch.isfinite(losses["reviewkd"])
    with pytest.raises(ConfigError, match=r"the teacher's stage 'block1' declares no pre-activation point; set distill.options.teacher_preact=false"):
        _build("reviewkd", teacher=TwoStageNet())
    assert _build("reviewkd", teacher=TwoStageNet(), options={"teacher_preact": False}).teacher_tap.feature_paths == ("block1", "block2")


def test_reviewkd_bad_options_are_explained():
    with pytest.raises(ConfigError, match="distill.options.max_mid_channels must be at least 1, got 0"):
        _build("reviewkd", options={"max_mid_channels": 0})
    with pytest.raises(ConfigError, match=r"distill.options.levels must be positive pooling sizes, got \[2, 0\]"):
        _build("reviewkd", options={"levels": [2, 0]})


def test_feature_methods_need_the_input_shape():
    student, teacher = create_model("resnet8", 4), create_model("resnet14", 4)
    with pytest.raises(ConfigError, match=r"method 'reviewkd' sizes its adapters .* input_shape=\(C, H, W\)"):
        build_distiller(DistillConfig(method="reviewkd"), student, teacher)


def test_probe_leaves_models_and_statistics_untouched():
    student, teacher = create_model("resnet8", 4).train(), create_model("resnet14", 4)
    running = student.bn1.running_mean.clone()
    distiller = build_distiller(DistillConfig(method="fitnet"), student, teacher, input_shape=INPUT)
    assert student.training and torch.equal(student.bn1.running_mean, running)
    assert distiller.regressor[0].in_channels == 32


# -- FitNet -------------------------------------------------------------------------------------------


def test_fitnet_hint_is_the_middle_stage_through_the_regressor():
    distiller = _build("fitnet")
    assert distiller.student_tap.feature_paths == ("layer2",) and distiller.teacher_tap.feature_paths == ("layer2",)
    s_out, handles = _outputs(distiller.student, ["layer2"])
    t_out, more = _outputs(distiller.teacher, ["layer2"])
    images, labels = _batch()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    for handle in handles + more:
        handle.remove()
    torch.testing.assert_close(losses["fitnet"], fitnet_loss(distiller.regressor(s_out["layer2"]), t_out["layer2"]))
    assert (t_out["layer2"] >= 0).all()  # FitNet's hint is the post-activation map


def test_fitnet_hint_stage_options():
    distiller = _build("fitnet", options={"hint_stage": "layer3", "teacher_hint_stage": "layer2"})
    assert distiller.student_tap.feature_paths == ("layer3",) and distiller.teacher_tap.feature_paths == ("layer2",)
    assert isinstance(distiller.regressor[0], nn.ConvTranspose2d)  # 2x2 student map -> 4x4 teacher map
    with pytest.raises(ConfigError, match=r"the student has no stage 'layer9' \(distill.options.hint_stage\); its stages are: layer1, layer2, layer3"):
        _build("fitnet", options={"hint_stage": "layer9"})


@pytest.mark.parametrize(
    "student_shape, teacher_shape, first_layer",
    [((8, 8, 8), (16, 4, 4), nn.Conv2d), ((8, 4, 4), (16, 8, 8), nn.ConvTranspose2d),
     ((8, 6, 6), (16, 4, 4), nn.Conv2d), ((8, 4, 4), (16, 4, 4), nn.Conv2d), ((8, 3, 3), (16, 5, 5), nn.Upsample)],
)  # fmt: skip
def test_conv_regressor_maps_student_shape_to_teacher_shape(student_shape, teacher_shape, first_layer):
    regressor = ConvRegressor(torch.Size(student_shape), torch.Size(teacher_shape))
    assert isinstance(regressor[0], first_layer)
    out = regressor(torch.randn(2, *student_shape))
    assert out.shape == (2, *teacher_shape) and (out >= 0).all()


# -- PEFD ---------------------------------------------------------------------------------------------


def test_pefd_ensemble_is_the_mean_of_relu_projections():
    distiller = _build("pefd")
    ensemble = distiller.projector_ensemble
    assert len(ensemble.projectors) == 3
    assert all((p.in_features, p.out_features) == (64, 256) for p in ensemble.projectors)
    weights = [p.weight.detach().clone() for p in ensemble.projectors]
    assert not torch.equal(weights[0], weights[1])  # differently initialised
    images, labels = _batch()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    s, t = distiller.student_tap(images).embedding, distiller.teacher_tap(images).embedding
    g = sum(torch.clamp(s @ p.weight.T + p.bias, min=0) for p in ensemble.projectors) / 3
    torch.testing.assert_close(losses["pefd"], pefd_loss(g, t))
    assert len(_build("pefd", options={"num_projectors": 5}).projector_ensemble.projectors) == 5
    with pytest.raises(ConfigError, match="distill.options.num_projectors must be at least 1, got 0"):
        _build("pefd", options={"num_projectors": 0})


# -- every feature method + ND -------------------------------------------------------------------------


@pytest.mark.parametrize("method", FEATURE_METHODS)
@pytest.mark.parametrize("teacher_arch, projected", [("resnet14", False), ("resnet8x4", True)])
def test_every_feature_method_composes_with_nd(method, teacher_arch, projected):
    distiller = _build(method, teacher_arch, nd_weight=1.5)
    assert (distiller.nd.projector is not None) == projected  # 64-d student vs 64-d / 256-d teacher
    images, labels = _batch()
    torch.manual_seed(5)
    _, losses = distiller.forward_train(images, labels, epoch=0)
    assert "nd" in losses and len(losses) >= 3 and all(torch.isfinite(v) for v in losses.values())
    s, t = distiller.student_tap(images).embedding, distiller.teacher_tap(images).embedding
    if not projected:
        torch.testing.assert_close(losses["nd"], 1.5 * nd_loss(s, t, distiller.nd.class_means, torch.arange(4)))
    sum(losses.values()).backward()
    extra = [p for module in distiller.extra_modules().values() for p in module.parameters()]
    assert all(p.grad is not None for p in extra)  # every adapter and the ND projector are trained
    trainable = {id(p) for p in distiller.trainable_parameters()}
    assert all(id(p) in trainable for p in extra)
    assert not any(key.startswith("teacher.") for key in distiller.trainable_state_dict())


@pytest.mark.parametrize("method, published", [("reviewkd", 1.8e6), ("fitnet", 16.8e3)])
def test_extra_parameters_match_the_published_count(method, published):
    """mdistiller's figure for resnet32x4 -> resnet8x4 on CIFAR-100: ReviewKD 1.8M, FitNet 16.8K extra parameters."""
    student, teacher = create_model("resnet8x4", 100), create_model("resnet32x4", 100)
    distiller = build_distiller(DistillConfig(method=method), student, teacher, input_shape=(3, 32, 32))
    count = sum(p.numel() for module in distiller.extra_modules().values() for p in module.parameters())
    assert round(count, -5 if method == "reviewkd" else -2) == published


def test_method_options_are_validated_in_the_config():
    with pytest.raises(ConfigError, match=r"unknown key 'distill.options.hint_layer'. Did you mean 'hint_stage'\?"):
        config_from_dict({"distill": {"method": "fitnet", "options": {"hint_layer": 2}}})
    with pytest.raises(ConfigError, match=r"'distill.options.ae_channels' must be an integer, got 'wide'"):
        config_from_dict({"distill": {"method": "diffkd", "options": {"ae_channels": "wide"}}})
    config = config_from_dict({"distill": {"method": "reviewkd", "options": {"levels": [2, 1]}}})
    assert config.distill.options["levels"] == [2, 1] and config.distill.options["max_mid_channels"] == 512
