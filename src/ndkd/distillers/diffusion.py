"""The diffusion pieces of DiffKD (Huang et al., "Knowledge Diffusion for Distillation", NeurIPS 2023).

* :class:`DDIMSchedule` — linear betas over T training steps, alphas_cumprod, forward noising and the
  deterministic (eta = 0) DDIM update.
* :func:`denoising_timesteps` — the inference grid, [400, 300, 200, 100, 0] for 5 steps of T = 1000.
* :class:`NoiseNet` — the noise-prediction network eps_theta(x, t) for maps and for vectors (1 x 1 maps).
* :class:`NoiseAdapter` — adaptive noise matching: the per-sample weight gamma of the student feature.
* :class:`LinearAutoencoder` — compresses (or widens) the teacher feature into the diffusion latent.
* :class:`DiffKDHead` — one branch: teacher latent, diffusion loss, student alignment, noise matching,
  DDIM denoising of the student (with gradients through every step) and the output projection.

Every layer width and normalisation follows the official module definitions (they reproduce its
parameter counts: 7,644,418 for a 512 -> 512-channel map branch with a 1024-wide autoencoder,
23,323,002 for a 1000-class logit branch). Written from the method description, not from its code.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

Kind = Literal["map", "vector"]
TIME_EMBEDDING_ROWS = 1280  # official table size (>= the 1000 training steps)


class DDIMSchedule(nn.Module):
    """Noise schedule with betas = linspace(beta_start, beta_end, T) and alpha_bar_t = prod_{i<=t} (1 - beta_i)."""

    def __init__(self, num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        super().__init__()
        betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float32)
        # constants of the method, rebuilt identically on construction: not saved in checkpoints
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0), persistent=False)
        self.num_train_steps = num_train_steps

    def alpha_bar(self, t: int) -> torch.Tensor:
        """alpha_bar_t as a 0-d tensor; 1 for t < 0 (the "set alpha to one" convention of the final step)."""
        return self.alphas_cumprod[t] if t >= 0 else torch.ones((), device=self.alphas_cumprod.device)

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps, with t [B] one step per sample."""
        alpha_bar = self.alphas_cumprod[t].reshape(-1, *([1] * (clean.dim() - 1)))
        return alpha_bar.sqrt() * clean + (1.0 - alpha_bar).sqrt() * noise

    def step(self, predicted_noise: torch.Tensor, x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """One deterministic DDIM update from step t to t_prev (eta = 0, no clipping):

            x_0 = (x - sqrt(1 - a_t) * eps) / sqrt(a_t),    x_prev = sqrt(a_prev) * x_0 + sqrt(1 - a_prev) * eps
        """
        alpha_t, alpha_prev = self.alpha_bar(t), self.alpha_bar(t_prev)
        clean = (x - (1.0 - alpha_t).sqrt() * predicted_noise) / alpha_t.sqrt()
        return alpha_prev.sqrt() * clean + (1.0 - alpha_prev).sqrt() * predicted_noise

    def denoise(self, noise_net: nn.Module, x: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
        """Run DDIM from ``x`` taken as x_{timesteps[0]}; gradients flow through every step."""
        for index, t in enumerate(timesteps):
            t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            x = self.step(noise_net(x, t), x, t, t_prev)
        return x


def denoising_timesteps(num_steps: int, num_train_steps: int = 1000, start_step: Optional[int] = None) -> list[int]:
    """The DDIM inference grid, from ``start_step`` down to 0 in ``num_steps`` evenly spaced steps.

    By default the start is the official one: the second half of a 2S-step grid over T steps,
    ``(S - 1) * (T // (2S))``, so S = 5, T = 1000 gives [400, 300, 200, 100, 0].
    """
    if num_steps < 1:
        raise ValueError(f"the number of denoising steps must be at least 1, got {num_steps}")
    if start_step is None:
        start_step = (num_steps - 1) * (num_train_steps // (2 * num_steps))
    if not num_steps - 1 <= start_step < num_train_steps:
        raise ValueError(
            f"the start step must lie in [{num_steps - 1}, {num_train_steps - 1}] for {num_steps} steps of a "
            f"{num_train_steps}-step schedule, got {start_step}"
        )
    if num_steps == 1:
        return [start_step]
    return [start_step * (num_steps - 1 - k) // (num_steps - 1) for k in range(num_steps)]


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 (C -> C/r) - BN - ReLU - 3x3 - BN - ReLU - 1x1 (-> C) - BN, plus x (no final ReLU)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = max(1, channels // reduction)
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1), nn.BatchNorm2d(channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class NoiseNet(nn.Module):
    """eps_theta(x [B, C, H, W], t) -> predicted noise of x's shape.

    The input is x + E[t] with a learned time embedding table E (added per channel, broadcast over
    H x W); ``t`` is an int (one step for the whole batch, when denoising) or a [B] tensor (training).
    Maps: two bottlenecks, 1x1 conv, BN. Vectors (1 x 1 maps): a two-block 1x1 MLP of width 4C.
    """

    def __init__(self, channels: int, kind: Kind, num_train_steps: int = 1000) -> None:
        super().__init__()
        self.time_embedding = nn.Embedding(max(TIME_EMBEDDING_ROWS, num_train_steps), channels)
        if kind == "map":
            self.body = nn.Sequential(
                Bottleneck(channels), Bottleneck(channels), nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels)
            )
        else:
            wide = 4 * channels
            self.body = nn.Sequential(
                nn.Conv2d(channels, wide, 1), nn.BatchNorm2d(wide), nn.ReLU(inplace=True),
                nn.Conv2d(wide, channels, 1), nn.BatchNorm2d(channels),
                nn.Conv2d(channels, wide, 1), nn.BatchNorm2d(wide), nn.ReLU(inplace=True),
                nn.Conv2d(wide, channels, 1),
            )  # fmt: skip

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        embedding = self.time_embedding.weight[t]  # [C] for an int step, [B, C] for per-sample steps
        return self.body(x + embedding[..., None, None].to(x.dtype))


class NoiseAdapter(nn.Module):
    """Adaptive noise matching: gamma = softmax(Linear(pool(g(z))))[:, 0] in (0, 1), one per sample.

    g is a bottleneck (reduction 8) for maps and a 1x1 MLP (C -> 2C -> C, BN) for vectors. gamma is the
    weight of the *student feature* in the initial sample gamma * z + (1 - gamma) * eps: larger gamma,
    less noise (the paper's text says the opposite; this is what the method computes).
    """

    def __init__(self, channels: int, kind: Kind) -> None:
        super().__init__()
        if kind == "map":
            self.features = Bottleneck(channels, reduction=8)
        else:
            self.features = nn.Sequential(
                nn.Conv2d(channels, 2 * channels, 1), nn.BatchNorm2d(2 * channels), nn.ReLU(inplace=True),
                nn.Conv2d(2 * channels, channels, 1), nn.BatchNorm2d(channels),
            )  # fmt: skip
        self.head = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.head(self.features(x).mean(dim=(2, 3))), dim=1)[:, 0]


class LinearAutoencoder(nn.Module):
    """Encoder 1x1 conv + BN (C_t -> C_z), decoder 1x1 conv (C_z -> C_t); trained only by its reconstruction loss."""

    def __init__(self, channels: int, latent_channels: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(channels, latent_channels, 1), nn.BatchNorm2d(latent_channels))
        self.decoder = nn.Conv2d(latent_channels, channels, 1)


class DiffKDOutput(NamedTuple):
    refined: torch.Tensor  # [B, C_z, H, W] denoised, projected student feature
    target: torch.Tensor  # [B, C_z, H, W] teacher latent (or teacher feature), detached
    diffusion_loss: torch.Tensor  # MSE of eps_theta's noise prediction on the noised teacher latent
    ae_loss: torch.Tensor | None  # autoencoder reconstruction MSE (None without autoencoder)


class DiffKDHead(nn.Module):
    """One DiffKD branch: ``forward(student [B, C_s, H_s, W_s], teacher [B, C_t, H, W]) -> DiffKDOutput``.

    Teacher side: latent z_t = encoder(f_t) (or f_t itself without autoencoder), target sg(z_t);
    L_diff = MSE(eps_theta(sqrt(a_t) sg(z_t) + sqrt(1 - a_t) eps, t), eps) with t ~ U{0..T-1} per sample.
    Student side: z_s = 1x1 conv(f_s) (resized to H x W first if needed); x = gamma z_s + (1 - gamma) eps;
    ``timesteps`` DDIM steps of eps_theta; refined = BN(1x1 conv(x)).
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        kind: Kind,
        inference_steps: int = 5,
        start_step: Optional[int] = None,
        num_train_steps: int = 1000,
        ae_channels: Optional[int] = None,
    ) -> None:
        super().__init__()
        latent = teacher_channels if ae_channels is None else ae_channels
        self.autoencoder = LinearAutoencoder(teacher_channels, latent) if ae_channels is not None else None
        self.align = nn.Conv2d(student_channels, latent, 1)
        self.noise_net = NoiseNet(latent, kind, num_train_steps)
        self.noise_adapter = NoiseAdapter(latent, kind)
        self.project = nn.Sequential(nn.Conv2d(latent, latent, 1), nn.BatchNorm2d(latent))
        self.schedule = DDIMSchedule(num_train_steps)
        self.timesteps = denoising_timesteps(inference_steps, num_train_steps, start_step)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> DiffKDOutput:
        teacher = teacher.detach()
        ae_loss = None
        if self.autoencoder is not None:
            latent = self.autoencoder.encoder(teacher)
            ae_loss = F.mse_loss(self.autoencoder.decoder(latent).float(), teacher.float())
            teacher = latent.detach()
        t = torch.randint(0, self.schedule.num_train_steps, (teacher.shape[0],), device=teacher.device)
        noise = torch.randn_like(teacher)
        predicted = self.noise_net(self.schedule.add_noise(teacher, noise, t), t)
        diffusion_loss = F.mse_loss(predicted.float(), noise.float())

        if student.shape[-2:] != teacher.shape[-2:]:
            student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        aligned = self.align(student)
        feature_weight = self.noise_adapter(aligned)[:, None, None, None]
        x = feature_weight * aligned + (1.0 - feature_weight) * torch.randn_like(aligned)
        refined = self.project(self.schedule.denoise(self.noise_net, x, self.timesteps))
        return DiffKDOutput(refined, teacher, diffusion_loss, ae_loss)
