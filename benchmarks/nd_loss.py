"""ND loss forward+backward: ndkd's vectorised ``nd_loss`` vs a per-sample Python loop of the same formula.

The loop is written the way the official KD++ code computes it: one iteration per sample, the label
read with ``.item()``, the class-mean looked up in a dict of Python lists and turned into a tensor,
Python ``max`` of the two norms. Both run on the CPU in float32; class-means for 100 classes.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._common import machine, ratio, time_call
from ndkd.losses import nd_loss


def per_sample_loop(student, teacher, class_means_lists, labels):
    loss = 0.0
    for s, t, label in zip(student, teacher, labels):
        centre = torch.tensor(class_means_lists[str(label.item())])
        direction = centre / centre.norm(p=2)
        largest = max(s.norm(p=2), t.norm(p=2))
        loss = loss + 1 - torch.dot(s, direction) / largest
    return loss / len(labels)


def measure(batch: int, dim: int, classes: int, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(batch * dim)
    student = torch.randn(batch, dim, generator=generator, requires_grad=True)
    teacher = torch.randn(batch, dim, generator=generator) * 2
    class_means = torch.rand(classes, dim, generator=generator)
    lists = {str(k): class_means[k].tolist() for k in range(classes)}
    labels = torch.randint(0, classes, (batch,), generator=generator)

    def ours():
        student.grad = None
        nd_loss(student, teacher, class_means, labels).backward()

    def loop():
        student.grad = None
        per_sample_loop(student, teacher, lists, labels).backward()

    same = torch.allclose(nd_loss(student, teacher, class_means, labels), per_sample_loop(student, teacher, lists, labels), atol=1e-5)
    baseline, vectorised = time_call(loop, repeats), time_call(ours, repeats * 5)
    return {
        "batch": batch, "dim": dim, "same_value": bool(same),
        "loop_ms": baseline["median_ms"], "ndkd_ms": vectorised["median_ms"],
        "speedup": ratio(baseline["median_ms"], vectorised["median_ms"]),
    }  # fmt: skip


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks nd_loss", description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256, 1280, 2048])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    rows = [measure(b, d, args.classes, args.repeats) for b in args.batches for d in args.dims]
    return {"benchmark": "nd_loss forward+backward (ms, median)", "machine": machine(), "results": rows}
