"""Fold a frozen network's BatchNorm layers into the convolutions that feed them.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``W' = W * g`` and ``b' = (b - mean) * g + beta``,
``g = gamma / sqrt(var + eps)`` per output channel: the same function (up to float rounding) with one
layer fewer to run. Used for the teacher, which only ever runs in eval mode. The BatchNorm module is
replaced by an ``nn.Identity`` at the same path, so the model's forward, its parameter paths and any
hook on the BatchNorm's name keep working (a hook on it now sees the folded convolution's output,
which is what the BatchNorm produced).
"""

from __future__ import annotations

import torch
from torch import fx, nn


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, bn path) for every BatchNorm2d whose only input is a Conv2d used by nothing else."""
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), nn.Conv2d)
            and len(source.users) == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def _replace(model: nn.Module, path: str, replacement: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, replacement)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every foldable conv -> BatchNorm2d pair of ``model`` in place; return how many were folded.

    ``model`` must be in eval mode (the fold uses the running statistics). Models that torch.fx
    cannot trace are left untouched (0 is returned).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it uses the running statistics)")
    try:
        pairs = _conv_bn_pairs(model)
    except Exception:  # data-dependent control flow: fx cannot trace it, so keep the model as it is
        return 0
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        folded_bias = (bias - bn.running_mean) * scale + bn.bias
        if conv.bias is None:
            conv.bias = nn.Parameter(folded_bias, requires_grad=conv.weight.requires_grad)
        else:
            conv.bias.copy_(folded_bias)
        _replace(model, bn_path, nn.Identity())
    return len(pairs)
