"""Loading and saving model weights, safely.

Files are read with ``torch.load(weights_only=True)`` (or as ``.safetensors``) only. Accepted layouts: a plain state_dict, or a
dict holding it under ``"model"``, ``"state_dict"`` or ``"model_state_dict"`` (the layouts of the shared
CIFAR teacher checkpoints, torchvision and most training scripts); ``module.`` prefixes left by
(Distributed)DataParallel are stripped. A mismatch is reported key by key with the registered
architecture whose parameters fit the file best.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ndkd.errors import CheckpointError

_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")
_LIST_LIMIT = 8


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` (any accepted layout), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":  # timm / Hugging Face weights
            from safetensors.torch import load_file

            payload = load_file(str(path))
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read weights file {str(path)!r}: {first_line}") from error
    if isinstance(payload, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(
            f"{str(path)!r} holds no state_dict: expected a dict of tensors, or one under "
            f"{', '.join(repr(k) for k in _STATE_DICT_KEYS)}"
        )
    return {_strip_module_prefix(key): value for key, value in payload.items()}


def _strip_module_prefix(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" ... (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def describe_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between two state_dicts (missing, unexpected, shape)."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key}: file {tuple(found[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in found and found[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape differences: {_listing(shapes)}")
    return problems


@functools.lru_cache(maxsize=4)
def _reference_shapes(in_channels: int) -> dict[str, tuple[dict[str, tuple[int, ...]], str]]:
    """{architecture: ({key: shape}, classifier prefix)} for every registered model.

    CIFAR architectures come from the packaged manifest (no model is built); the others are built on
    the meta device (no memory, no computation).
    """
    from ndkd.models.cifar import load_manifest
    from ndkd.models.features import find_classifier
    from ndkd.models.registry import create_model, list_models

    references = {}
    for name, entry in load_manifest().items():
        last_key = entry["state_dict"][-1][0]  # the classifier's bias closes every manifest state_dict
        references[name] = ({key: tuple(shape) for key, shape in entry["state_dict"]}, last_key.rsplit(".", 1)[0])
    for entry in list_models():
        if entry.name in references:
            continue
        with torch.device("meta"):
            model = create_model(entry.name, num_classes=2, in_channels=in_channels)
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        references[entry.name] = (shapes, find_classifier(model)[0])
    return references


def closest_architecture(state_dict: Mapping[str, torch.Tensor], in_channels: int | None = None) -> str | None:
    """Name of the architecture whose state_dict keys and shapes fit ``state_dict`` best (None below half).

    The class count is free (classifier shapes are not compared), so a 10-class resnet56 file is still
    recognised from the 100-class manifest.
    """
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    best, best_score = None, 0.0
    for name, (expected, classifier) in _reference_shapes(in_channels or 3).items():
        matches = sum(
            1 for key, shape in expected.items() if key in found and (found[key] == shape or key.startswith(classifier + "."))
        )
        score = matches / max(len(expected), len(found))
        if score > best_score:
            best, best_score = name, score
    return best if best_score >= 0.5 else None


def load_weights(model: nn.Module, path: str | Path, arch: str | None = None) -> nn.Module:
    """Load weights from ``path`` into ``model`` with strict key and shape matching.

    Raises :class:`CheckpointError` listing missing/unexpected keys and shape differences, and naming
    the registered architecture that fits the file when it is not ``arch``.
    """
    state_dict = read_state_dict(path)
    expected = model.state_dict()
    problems = describe_mismatch(expected, state_dict)
    if problems:
        what = f"the {arch} model" if arch else f"the {type(model).__name__} model"
        message = f"{str(path)!r} does not fit {what}: " + "; ".join(problems)
        suggestion = closest_architecture(state_dict)
        if suggestion and suggestion != arch:
            message += f". The file looks like a {suggestion!r} checkpoint; set the architecture to {suggestion!r}"
        raise CheckpointError(message)
    model.load_state_dict(state_dict, strict=True)
    return model


def save_weights(model: nn.Module, path: str | Path, **metadata: Any) -> None:
    """Save ``{"model": state_dict, **metadata}`` atomically (the layout ``load_weights`` reads)."""
    from ndkd.engine.checkpoint import atomic_save

    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_save({"model": state_dict, **metadata}, path)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, streamed (identifies the teacher checkpoint in class-means metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
