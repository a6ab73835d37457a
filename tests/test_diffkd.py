"""DiffKD: the DDIM schedule and step against hand computations, the branch composition, the gradient paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndkd.config import DistillConfig
from ndkd.distillers import build_distiller
from ndkd.distillers.diffusion import DDIMSchedule, DiffKDHead, NoiseNet, denoising_timesteps
from ndkd.errors import ConfigError
from ndkd.losses import kd_loss
from ndkd.models import FeatureTap, create_model


def alpha_bar(t: int) -> float:
    """prod_{i<=t} (1 - beta_i) with beta_i = 1e-4 + i * (0.02 - 1e-4) / 999, in float64; 1 for t < 0."""
    product = 1.0
    for i in range(t + 1):
        product *= 1.0 - (1e-4 + i * (0.02 - 1e-4) / 999)
    return product


def test_timestep_grid_and_start_step():
    assert denoising_timesteps(5) == [400, 300, 200, 100, 0]
    assert denoising_timesteps(10) == [450, 400, 350, 300, 250, 200, 150, 100, 50, 0]
    assert denoising_timesteps(4, start_step=600) == [600, 400, 200, 0]
    assert denoising_timesteps(1) == [0]  # second half of the 2-step grid [500, 0]
    with pytest.raises(ValueError, match=r"the start step must lie in \[4, 999\] for 5 steps of a 1000-step schedule, got 1000"):
        denoising_timesteps(5, start_step=1000)


def test_schedule_values():
    schedule = DDIMSchedule()
    assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(0.02)
    for t in (0, 100, 400, 999):
        assert schedule.alphas_cumprod[t].item() == pytest.approx(alpha_bar(t), rel=1e-5)
    assert schedule.alphas_cumprod[400].item() == pytest.approx(0.1936, abs=1e-4)
    assert schedule.alpha_bar(-1).item() == 1.0
    assert not any(key.startswith(("betas", "alphas")) for key in schedule.state_dict())  # constants, not state


def test_add_noise_and_ddim_step_by_hand():
    schedule = DDIMSchedule()
    clean, noise = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.3, 0.1], [-1.0, 2.0]])
    noised = schedule.add_noise(clean, noise, torch.tensor([400, 100]))
    a400, a300, a100 = alpha_bar(400), alpha_bar(300), alpha_bar(100)
    expected = torch.tensor([
        [a400**0.5 * 1.0 + (1 - a400) ** 0.5 * 0.3, a400**0.5 * -2.0 + (1 - a400) ** 0.5 * 0.1],
        [a100**0.5 * 0.5 + (1 - a100) ** 0.5 * -1.0, a100**0.5 * 3.0 + (1 - a100) ** 0.5 * 2.0],
    ])  # fmt: skip
    torch.testing.assert_close(noised, expected, rtol=1e-5, atol=1e-6)

    x, eps = torch.tensor([2.0]), torch.tensor([0.5])
    x0 = (2.0 - (1 - a400) ** 0.5 * 0.5) / a400**0.5
    torch.testing.assert_close(schedule.step(eps, x, 400, 300), torch.tensor([a300**0.5 * x0 + (1 - a300) ** 0.5 * 0.5]), rtol=1e-5, atol=1e-6)
    a0 = alpha_bar(0)  # the last step (t_prev < 0, alpha_bar = 1) returns the predicted x_0
    torch.testing.assert_close(schedule.step(eps, x, 0, -1), torch.tensor([(2.0 - (1 - a0) ** 0.5 * 0.5) / a0**0.5]))


def test_denoise_runs_each_step_of_the_grid():
    schedule = DDIMSchedule()
    seen = []

    def noise_net(x, t):
        seen.append(t)
        return 0.1 * x

    x = torch.tensor([1.0])
    out = schedule.denoise(noise_net, x, [400, 300, 200, 100, 0])
    expected = x
    for t, t_prev in ((400, 300), (300, 200), (200, 100), (100, 0), (0, -1)):
        a, a_prev = alpha_bar(t), alpha_bar(t_prev) if t_prev >= 0 else 1.0
        x0 = (expected - (1 - a) ** 0.5 * 0.1 * expected) / a**0.5
        expected = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * 0.1 * expected
    assert seen == [400, 300, 200, 100, 0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_parameter_counts_match_the_official_modules():
    with torch.device("meta"):  # shapes only, no memory
        feature = DiffKDHead(512, 512, "map", ae_channels=1024)  # ResNet-34 -> ResNet-18, AE 1024
        logit = DiffKDHead(1000, 1000, "vector")  # ImageNet logits
    assert sum(p.numel() for p in feature.parameters()) == 7_644_418
    assert sum(p.numel() for p in logit.parameters()) == 23_323_002


def test_time_embedding_for_one_step_equals_per_sample_steps():
    torch.manual_seed(0)
    for kind, shape in (("map", (3, 8, 4, 4)), ("vector", (3, 8, 1, 1))):
        net = NoiseNet(8, kind).eval()
        x = torch.randn(shape)
        torch.testing.assert_close(net(x, 300), net(x, torch.full((3,), 300)))
        assert not torch.allclose(net(x, 300), net(x, 200))


def reference_head(head: DiffKDHead, student: torch.Tensor, teacher: torch.Tensor):
    """The DiffKD branch from METHOD_DIFFKD_PEFD.md 1.3, composed from the head's modules with the same random draws."""
    latent = head.autoencoder.encoder(teacher)
    ae = ((head.autoencoder.decoder(latent) - teacher) ** 2).mean()
    target = latent.detach()
    t = torch.randint(0, 1000, (teacher.shape[0],))
    noise = torch.randn_like(target)
    a = torch.tensor([alpha_bar(int(step)) for step in t]).view(-1, 1, 1, 1)
    diffusion = ((head.noise_net(a.sqrt() * target + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()
    aligned = head.align(student)
    gamma = F.softmax(head.noise_adapter.head(head.noise_adapter.features(aligned).mean(dim=(2, 3))), dim=1)[:, 0]
    x = gamma.view(-1, 1, 1, 1) * aligned + (1 - gamma.view(-1, 1, 1, 1)) * torch.randn_like(aligned)
    for step, prev in ((400, 300), (300, 200), (200, 100), (100, 0), (0, -1)):
        eps = head.noise_net(x, step)
        a_t, a_prev = alpha_bar(step), alpha_bar(prev) if prev >= 0 else 1.0
        x = a_prev**0.5 * (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5 + (1 - a_prev) ** 0.5 * eps
    return head.project(x), target, diffusion, ae


def test_head_composes_ae_diffusion_noise_matching_and_ddim():
    torch.manual_seed(0)
    head = DiffKDHead(6, 10, "map", ae_channels=12)
    student, teacher = torch.randn(4, 6, 3, 3), torch.randn(4, 10, 3, 3)
    torch.manual_seed(7)
    out = head(student, teacher)
    torch.manual_seed(7)
    expected = reference_head(head, student, teacher)
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert out.refined.shape == out.target.shape == (4, 12, 3, 3)


def _diffkd(options=None, teacher_arch="resnet14"):
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 4), create_model(teacher_arch, 4)
    distiller = build_distiller(DistillConfig(method="diffkd", options=options or {}), student, teacher, input_shape=(3, 8, 8))
    images, labels = torch.randn(4, 3, 8, 8), torch.arange(4)
    return distiller.train(), images, labels


def _grads(module):
    return [p.grad for p in module.parameters()]


def test_student_backbone_gets_gradient_through_the_denoising_loop():
    distiller, images, labels = _diffkd()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    losses["diffkd_feat"].backward()  # MSE(refined student, target): reaches the student only through the DDIM loop
    head = distiller.feature_head
    assert distiller.student.conv1.weight.grad.abs().sum() > 0
    assert head.noise_net.time_embedding.weight.grad[[400, 300, 200, 100, 0]].abs().sum(dim=1).gt(0).all()
    assert head.noise_net.time_embedding.weight.grad[[401, 50, 999]].abs().sum() == 0  # only the grid's steps
    assert head.noise_adapter.head.weight.grad.abs().sum() > 0  # gamma learns through the KD term
    assert all(grad is None for grad in _grads(head.autoencoder))  # target detached: AE untouched
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_teacher_latents_are_detached_and_ae_is_trained_only_by_its_loss():
    distiller, images, labels = _diffkd()
    teacher_map = FeatureTap(distiller.teacher, ("layer3",))(images).features["layer3"].detach()
    out = distiller.feature_head(torch.randn(4, 64, 2, 2, requires_grad=True), teacher_map)
    assert not out.target.requires_grad and out.ae_loss.requires_grad
    _, losses = distiller.forward_train(images, labels, epoch=0)
    sum(value for name, value in losses.items() if name != "diffkd_ae").backward(retain_graph=True)
    assert all(grad is None for grad in _grads(distiller.feature_head.autoencoder))
    distiller.zero_grad(set_to_none=True)
    losses["diffkd_ae"].backward()
    assert all(grad is not None and grad.abs().sum() > 0 for grad in _grads(distiller.feature_head.autoencoder))
    others = [distiller.student, distiller.feature_head.noise_net, distiller.feature_head.align, distiller.logit_head]
    assert all(grad is None for module in others for grad in _grads(module))


def test_diffusion_loss_trains_the_noise_net_not_the_student():
    distiller, images, labels = _diffkd()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    losses["diffkd_feat_diffusion"].backward()
    assert all(grad is None for grad in _grads(distiller.student))
    assert distiller.feature_head.noise_net.time_embedding.weight.grad.abs().sum() > 0


def test_terms_branches_and_logit_kl():
    distiller, images, labels = _diffkd()
    torch.manual_seed(3)
    logits, losses = distiller.forward_train(images, labels, epoch=0)
    assert set(losses) == {"ce", "diffkd_feat", "diffkd_feat_diffusion", "diffkd_ae", "diffkd_logit", "diffkd_logit_diffusion"}
    # replay the same random draws: the logit term is KL(T=1) between the refined student and the teacher logits
    student, teacher = FeatureTap(distiller.student, ("layer3",)), FeatureTap(distiller.teacher, ("layer3",))
    torch.manual_seed(3)
    s_out = student(images)
    with torch.no_grad():
        t_out = teacher(images)
    distiller.feature_head(s_out.features["layer3"], t_out.features["layer3"])
    out = distiller.logit_head(s_out.logits[:, :, None, None], t_out.logits[:, :, None, None])
    torch.testing.assert_close(losses["diffkd_logit"], kd_loss(out.refined.flatten(1), t_out.logits, 1.0))

    distiller, images, labels = _diffkd({"logit_branch": False, "use_ae": False})
    _, losses = distiller.forward_train(images, labels, epoch=0)
    assert set(losses) == {"ce", "diffkd_feat", "diffkd_feat_diffusion"}
    assert distiller.logit_head is None and distiller.feature_head.autoencoder is None


def test_ae_width_defaults_to_teacher_channels_and_is_an_option():
    distiller, _, _ = _diffkd(teacher_arch="resnet8x4")  # 64-channel student map, 256-channel teacher map
    assert distiller.feature_head.autoencoder.encoder[0].out_channels == 256
    assert distiller.feature_head.align.in_channels == 64
    distiller, _, _ = _diffkd({"ae_channels": 32, "inference_steps": 3, "start_step": 600}, teacher_arch="resnet8x4")
    assert distiller.feature_head.autoencoder.encoder[0].out_channels == 32
    assert distiller.feature_head.timesteps == distiller.logit_head.timesteps == [600, 300, 0]


def test_bad_options_are_explained():
    with pytest.raises(ConfigError, match="diffkd needs at least one branch"):
        _diffkd({"feature_branch": False, "logit_branch": False})
    with pytest.raises(ConfigError, match="distill.options.ae_channels must be at least 1, got 0"):
        _diffkd({"ae_channels": 0})
    with pytest.raises(ConfigError, match=r"distill.options \(inference_steps, start_step, train_steps\): the start step"):
        _diffkd({"start_step": 2000})
