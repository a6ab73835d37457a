"""What `ndkd models` prints: each architecture's size, embedding width, stages and FLOPs.

Everything is measured on the meta device (shapes only: no memory, no arithmetic), at the model's
native resolution (32x32 for the CIFAR zoo, 224x224 for ImageNet models, timm's default for timm).
FLOPs are counted by ``torch.utils.flop_counter`` for one image: a multiply-add counts as 2 FLOPs, so
ResNet-18 at 224x224 shows 3,628 MFLOPs where papers quote "1.8 GFLOPs" (multiply-adds).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ndkd.models.features import FeatureTap, embedding_dim, model_stages
from ndkd.models.registry import create_model, get_model_entry, list_models
from ndkd.tables import format_text_table


@dataclass(frozen=True)
class StageInfo:
    name: str
    path: str
    preact_path: str | None
    shape: tuple[int, ...]  # (C, H, W) of one image at the native resolution (timm ViTs: (tokens, C))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    aliases: tuple[str, ...]
    description: str
    input_size: int
    params: int
    embedding_dim: int
    mflops: float
    stages: tuple[StageInfo, ...]

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=None)
def describe_model(name: str, num_classes: int | None = None, in_channels: int = 3) -> ModelInfo:
    """Measure ``name`` (100 classes for CIFAR models, 1000 otherwise, unless ``num_classes``); cached."""
    entry = get_model_entry(name)
    classes = num_classes or (100 if entry.family == "cifar" else 1000)
    image = torch.empty(1, in_channels, entry.input_size, entry.input_size, device="meta")
    with torch.device("meta"):
        model = create_model(entry.name, classes, in_channels).eval()
    try:
        stages = model_stages(model)
    except ValueError:
        stages = []
    tap = FeatureTap(model, tuple(stage.path for stage in stages))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = tap(image)
    tap.remove()
    return ModelInfo(
        name=entry.name,
        family=entry.family,
        aliases=entry.aliases,
        description=entry.description,
        input_size=entry.input_size,
        params=sum(p.numel() for p in model.parameters()),
        embedding_dim=embedding_dim(model),
        mflops=counter.get_total_flops() / 1e6,
        stages=tuple(StageInfo(s.name, s.path, s.preact_path, tuple(out.features[s.path].shape[1:])) for s in stages),
    )


def describe_all(family: str | None = None) -> list[ModelInfo]:
    """Every registered architecture (optionally of one family), sorted by family then name."""
    entries = [e for e in list_models() if family is None or e.family == family]
    return [describe_model(e.name) for e in sorted(entries, key=lambda e: (e.family, e.name.lower()))]


def format_models(infos: list[ModelInfo]) -> str:
    """One line per architecture: name, family, input size, parameters, embedding width, stage channels, MFLOPs."""
    header = ("name", "family", "input", "params (M)", "embedding", "stage channels", "MFLOPs", "aliases")
    rows = [
        (
            info.name, info.family, f"{info.input_size}x{info.input_size}", f"{info.params / 1e6:.2f}", str(info.embedding_dim),
            "/".join(str(s.shape[0] if len(s.shape) == 3 else s.shape[-1]) for s in info.stages), f"{info.mflops:,.1f}",
            ", ".join(info.aliases),
        )
        for info in infos
    ]  # fmt: skip
    return format_text_table([header, *rows])


def format_features(info: ModelInfo) -> str:
    """The stages of one architecture: name, module path, pre-activation path and output shape."""
    header = ("stage", "module", "pre-activation", "shape (one image)")
    rows = [(s.name, s.path, s.preact_path or "-", "x".join(map(str, s.shape))) for s in info.stages]
    lines = [
        f"{info.name}: {info.description}; input {info.input_size}x{info.input_size}, {info.params / 1e6:.2f} M parameters, "
        f"{info.mflops:,.1f} MFLOPs",
        f"embedding: {info.embedding_dim}-d (input of the final Linear)",
        format_text_table([header, *rows]) if rows else "no feature stages declared (ND and logit methods work; feature methods need stages)",
    ]
    return "\n".join(lines)
