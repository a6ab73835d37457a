"""Class-means of N x D teacher features: ndkd's ``index_add_`` accumulation vs per-element Python lists.

The baseline follows the official extraction script: every feature element is rounded to 4 decimals
and appended to a per-class Python list, and the means are taken over those lists in Python. The
feature extraction itself (the teacher's forward) is the same for both and is left out.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks._common import machine, ratio


def python_lists(features: torch.Tensor, labels: torch.Tensor, classes: int) -> list[list[float]]:
    per_class: dict[int, list[list[float]]] = {k: [] for k in range(classes)}
    for feature, label in zip(features.tolist(), labels.tolist()):
        per_class[label].append([round(value, 4) for value in feature])
    means = []
    for k in range(classes):
        rows = per_class[k]
        means.append([round(sum(column) / len(rows), 4) for column in zip(*rows)])
    return means


def vectorised(features: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    sums = torch.zeros(classes, features.shape[1], dtype=torch.float64).index_add_(0, labels, features.double())
    counts = torch.bincount(labels, minlength=classes).double()
    return (sums / counts[:, None]).float()


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks class_means", description=__doc__)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(args.samples, args.dim, generator=generator) * 3
    labels = torch.arange(args.samples) % args.classes

    started = time.perf_counter()
    ours = vectorised(features, labels, args.classes)
    ours_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    baseline = torch.tensor(python_lists(features, labels, args.classes))
    baseline_ms = (time.perf_counter() - started) * 1000
    return {
        "benchmark": f"class-means of {args.samples} x {args.dim} features, {args.classes} classes",
        "machine": machine(),
        "python_lists_ms": round(baseline_ms, 1),
        "ndkd_ms": round(ours_ms, 2),
        "speedup": ratio(baseline_ms, ours_ms),
        "max_abs_difference": float((baseline - ours).abs().max()),  # the baseline rounds to 4 decimals
    }
