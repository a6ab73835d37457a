"""Feature taps: read a model's embedding and named intermediate outputs without touching its forward.

The *embedding* is the input of the model's final classifier ``nn.Linear`` (the penultimate feature
that KD++'s ND loss acts on). It is captured with a forward pre-hook, so any model whose logits come
out of a final Linear works, torchvision and timm models included, and the model's outputs are
identical whether or not a tap is attached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    """A named stage of a backbone, for feature distillers (ReviewKD, FitNet, DiffKD, ...).

    ``path`` is the module whose output is the stage feature (after its activation);
    ``preact_path`` the module whose output is the same feature before the final ReLU, when the
    architecture has one (ReviewKD reads teacher features there).
    """

    name: str
    path: str
    preact_path: str | None = None


def model_stages(model: nn.Module) -> list[Stage]:
    """The stages of ``model``, stem first, as declared by its ``feature_stages()`` method."""
    declared = getattr(model, "feature_stages", None)
    if callable(declared):
        return list(declared())
    raise ValueError(
        f"{type(model).__name__} declares no feature stages; feature distillers need named stage modules"
    )


@dataclass
class TapOutput:
    """What one forward pass through a tapped model produced.

    ``logits`` [B, K]; ``embedding`` [B, D] (the classifier's input, flattened);
    ``features`` maps each requested module path to that module's output.
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def find_classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """Return ``(path, module)`` of the final classifier Linear of ``model``.

    timm models name it through ``get_classifier()``; otherwise it is the last ``nn.Linear`` registered
    in the model (``fc`` for ResNets, ``classifier[-1]`` for torchvision's MobileNet, ...).
    """
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for path, module in model.named_modules():
            if module is head and isinstance(module, nn.Linear):
                return path, module
    linears = [(path, module) for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier; ndkd needs one to find the embedding")
    return linears[-1]


class FeatureTap:
    """Attach hooks to ``model`` and run it, returning logits, embedding and requested features.

    ``FeatureTap(model)(images)`` -> :class:`TapOutput`. ``feature_paths`` names extra modules (as in
    ``model.named_modules()``) whose outputs are kept. Hooks stay attached for the tap's lifetime;
    call :meth:`remove` to detach them.
    """

    def __init__(self, model: nn.Module, feature_paths: tuple[str, ...] = ()) -> None:
        self.model = model
        self.classifier_path, classifier = find_classifier(model)
        self._captured: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        missing = [path for path in feature_paths if path not in modules]
        if missing:
            raise ValueError(f"{type(model).__name__} has no module(s) {missing}")
        self.feature_paths = tuple(feature_paths)
        self._handles = [classifier.register_forward_pre_hook(self._keep_embedding)]
        for path in self.feature_paths:
            self._handles.append(modules[path].register_forward_hook(self._keep_output(path)))

    def _keep_embedding(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured["embedding"] = torch.flatten(inputs[0], 1)

    def _keep_output(self, path: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._captured[path] = output

        return hook

    def __call__(self, images: torch.Tensor) -> TapOutput:
        self._captured = {}
        logits = self.model(images)
        captured, self._captured = self._captured, {}
        if "embedding" not in captured:
            raise RuntimeError(
                f"the classifier {self.classifier_path!r} of {type(self.model).__name__} was not called in forward"
            )
        return TapOutput(
            logits=logits,
            embedding=captured["embedding"],
            features={path: captured[path] for path in self.feature_paths},
        )

    def remove(self) -> None:
        """Detach every hook this tap installed."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def embedding_dim(model: nn.Module) -> int:
    """Width D of the embedding (the input features of the final classifier Linear)."""
    return find_classifier(model)[1].in_features
