"""Evaluation: top-1, top-5 and mean cross-entropy over a loader, summed over processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndkd.engine.acceleration import autocast
from ndkd.engine.runtime import Runtime
from ndkd.errors import TrainingError


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, runtime: Runtime | None = None, precision: str = "fp32") -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy of ``model`` (eval mode) over ``loader``.

    Under DDP each process evaluates its part of every batch and the counts are summed, so the result
    is the metric over the whole set. One host sync, at the end.
    """
    was_training = model.training
    model.eval()
    device = runtime.device if runtime is not None else next(model.parameters()).device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, loss sum, count
    count = 0
    for images, labels in loader:
        if labels.numel() == 0:
            continue
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(labels[:, None])
        totals[0] += hits[:, 0].sum()
        totals[1] += hits.any(dim=1).sum()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum")
        count += labels.numel()
    model.train(was_training)
    totals[3] = count
    if runtime is not None:
        runtime.all_reduce_sum(totals)
    correct1, correct5, loss_sum, count = totals.tolist()
    if count == 0:
        raise TrainingError("the evaluation set is empty")
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count}
