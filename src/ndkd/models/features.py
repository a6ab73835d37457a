"""Feature taps: read a model's embedding and named intermediate outputs without touching its forward.

The *embedding* is the input of the model's final classifier ``nn.Linear`` (the penultimate feature
that KD++'s ND loss acts on). It is captured with a forward pre-hook, so any model whose logits come
out of a final Linear works, torchvision and timm models included, and the model's outputs are
identical whether or not a tap is attached.

A feature path is a module path of ``model.named_modules()`` (the module's output is kept) or a module
path followed by ``:input`` (the first input of the module's *last* call in a forward pass, copied):
torchvision's ResNet blocks apply one in-place ``relu`` module several times, last to the residual sum,
so ``layer4.1.relu:input`` is the stage's pre-activation without touching the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

INPUT_SUFFIX = ":input"


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


StageRule = Callable[[nn.Module], list[Stage]]
# stage tables of third-party model classes, keyed by "module.QualName" so that nothing is imported here
_STAGE_RULES: dict[str, StageRule] = {}


def register_stage_rule(class_path: str, rule: StageRule) -> None:
    """Declare the stages of instances of the class ``class_path`` (``"torchvision.models.resnet.ResNet"``)."""
    _STAGE_RULES[class_path] = rule


def model_stages(model: nn.Module) -> list[Stage]:
    """The stages of ``model``, stem first.

    Taken from, in order: the model's own ``feature_stages()`` method (the ndkd zoo), a rule registered
    for its class (torchvision's ResNet and MobileNetV2), timm's ``feature_info`` (every timm model).
    """
    declared = getattr(model, "feature_stages", None)
    if callable(declared):
        return list(declared())
    for cls in type(model).__mro__:
        rule = _STAGE_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule(model)
    feature_info = getattr(model, "feature_info", None)
    if isinstance(feature_info, list) and feature_info and all(isinstance(i, dict) and "module" in i for i in feature_info):
        return [Stage(info["module"], info["module"]) for info in feature_info]
    raise ValueError(
        f"{type(model).__name__} declares no feature stages: give it a feature_stages() method returning "
        "ndkd.models.Stage(name, module_path, preact_path) entries, stem first (feature distillers need them)"
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
        missing = [path for path in feature_paths if path.removesuffix(INPUT_SUFFIX) not in modules]
        if missing:
            raise ValueError(f"{type(model).__name__} has no module(s) {missing}")
        self.feature_paths = tuple(feature_paths)
        self._handles = [classifier.register_forward_pre_hook(self._keep_embedding)]
        for path in self.feature_paths:
            if path.endswith(INPUT_SUFFIX):
                module = modules[path.removesuffix(INPUT_SUFFIX)]
                self._handles.append(module.register_forward_pre_hook(self._keep_input(path)))
            else:
                self._handles.append(modules[path].register_forward_hook(self._keep_output(path)))

    def _keep_embedding(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured["embedding"] = torch.flatten(inputs[0], 1)

    def _keep_output(self, path: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._captured[path] = output

        return hook

    def _keep_input(self, path: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            # copied: the module may work in place (torchvision's ReLUs do); a later call overwrites
            self._captured[path] = inputs[0].clone()

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
