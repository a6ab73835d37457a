"""ndkd's training step against the same step written the conventional way, interleaved in one process.

``python -m benchmarks step_vs_plain [--pairs resnet56:resnet20 resnet32x4:resnet8x4] [--rounds 20]``.
Four steps of the same fp32 computation on the same batch (batch 64, CIFAR-100 shapes, random weights
with BatchNorm-calibrated teachers, as ``train_step``):

* ``plain_kd``: KD written inline as the peers do it (mdistiller's KD step: student forward, teacher
  forward under ``no_grad``, CE + T² KL from ``log_softmax``/``softmax``, backward, SGD step);
* ``official_kdpp``: ``plain_kd`` plus the ND loss as the official KD++ code computes it (a per-sample
  Python loop over the batch, class-means in a dict of lists; ``benchmarks.nd_loss.per_sample_loop``),
  the student embedding taken with a forward pre-hook on the classifier;
* ``ndkd_kd`` / ``ndkd_kdpp``: ndkd's distiller (``kd``, then ``kd`` + ND) through the trainer's
  ``training_step``.

The four run round-robin (one step of each per round) after warm-up steps, so a slow spell of the
machine hits all of them; the median per step is reported with the ratios, and the ND loss's own
forward+backward time on this batch, as a share of the KD step. Separate processes per
configuration (``train_step``) drift by ±15 % on this kind of machine, more than ND costs, which is
why the ND overhead is measured here.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks._common import machine, ratio, time_call
from benchmarks.nd_loss import per_sample_loop
from benchmarks.train_step import PEERS_MS, calibrate_batchnorm
from ndkd.losses import nd_loss

TEMPERATURE = 4.0
ND_WEIGHT = 1.0


def _plain_step(student, teacher, optimizer, images, labels, nd_lists=None) -> None:
    """One conventional KD (or official-style KD++ when ``nd_lists`` is given) step."""
    captured = {}
    handle = student.fc.register_forward_pre_hook(lambda module, inputs: captured.update(s=inputs[0])) if nd_lists else None
    logits = student(images)
    with torch.no_grad():
        if nd_lists:
            teacher_captured = {}
            teacher_handle = teacher.fc.register_forward_pre_hook(lambda module, inputs: teacher_captured.update(t=inputs[0]))
        teacher_logits = teacher(images)
    kd = F.kl_div(F.log_softmax(logits / TEMPERATURE, dim=1), F.softmax(teacher_logits / TEMPERATURE, dim=1), reduction="batchmean")
    loss = F.cross_entropy(logits, labels) + kd * TEMPERATURE**2
    if nd_lists:
        handle.remove()
        teacher_handle.remove()
        loss = loss + ND_WEIGHT * per_sample_loop(captured["s"], teacher_captured["t"], nd_lists, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure_pair(teacher_name: str, student_name: str, rounds: int, batch: int) -> dict:
    from ndkd.config import DistillConfig, NDConfig
    from ndkd.distillers import build_distiller
    from ndkd.engine.trainer import training_step
    from ndkd.models import create_model, embedding_dim

    torch.manual_seed(0)
    teacher = calibrate_batchnorm(create_model(teacher_name, num_classes=100), batch, torch.Generator().manual_seed(3))
    student = create_model(student_name, num_classes=100)
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(batch) % 100
    class_means = torch.rand(100, embedding_dim(teacher), generator=torch.Generator().manual_seed(2))
    lists = {str(k): class_means[k].tolist() for k in range(100)}
    if embedding_dim(student) != embedding_dim(teacher):
        raise SystemExit(f"{teacher_name} -> {student_name}: embedding widths differ; this benchmark compares pairs without a projector")

    def plain(nd: bool):
        model = copy.deepcopy(student).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return lambda: _plain_step(model, teacher, optimizer, images, labels, lists if nd else None)

    def ours(nd: bool):
        config = DistillConfig(method="kd", options={"temperature": TEMPERATURE}, nd=NDConfig(weight=ND_WEIGHT if nd else 0.0))
        distiller = build_distiller(config, copy.deepcopy(student), copy.deepcopy(teacher), class_means if nd else None, (3, 32, 32))
        distiller.train()
        optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.01, momentum=0.9)
        return lambda: training_step(distiller, optimizer, images, labels, epoch=1)

    steps = {"plain_kd": plain(False), "official_kdpp": plain(True), "ndkd_kd": ours(False), "ndkd_kdpp": ours(True)}
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds + 2):  # two warm-up rounds
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            if round_index >= 2:
                samples[name].append((time.perf_counter() - started) * 1000.0)
    ms = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    # ND's own cost inside the step: its loss forward+backward on embeddings of this batch and width,
    # precise where the difference of two whole-step medians is within the machine's noise
    student_emb = torch.randn(batch, embedding_dim(student), requires_grad=True)
    teacher_emb = torch.randn(batch, embedding_dim(teacher)) * 2

    def nd_only() -> None:
        student_emb.grad = None
        nd_loss(student_emb, teacher_emb, class_means, labels).backward()

    nd_ms = time_call(nd_only, repeats=200)["median_ms"]
    result = {
        "teacher": teacher_name, "student": student_name, "batch": batch, "rounds": rounds,
        "ms_per_step": ms,
        "images_per_s": {name: round(batch / value * 1000.0, 1) for name, value in ms.items()},
        "ndkd_kd_speedup_vs_plain_kd": ratio(ms["plain_kd"], ms["ndkd_kd"]),
        "ndkd_kdpp_speedup_vs_official_kdpp": ratio(ms["official_kdpp"], ms["ndkd_kdpp"]),
        "nd_overhead_percent": {
            "ndkd": round(100.0 * (ms["ndkd_kdpp"] / ms["ndkd_kd"] - 1.0), 1),
            "official": round(100.0 * (ms["official_kdpp"] / ms["plain_kd"] - 1.0), 1),
        },
        "nd_loss_ms": nd_ms,
        "nd_loss_percent_of_ndkd_kd_step": round(100.0 * nd_ms / ms["ndkd_kd"], 3),
    }  # fmt: skip
    peer = PEERS_MS.get((teacher_name, student_name, "kd"))
    if peer:
        # the peer figure was measured on another machine of this kind; scale by how fast this one runs
        # the same plain step, so that the comparison is of code, not of machines
        result["mdistiller_kd_ms_published"] = peer
        result["this_machine_vs_published_machine"] = round(ms["plain_kd"] / peer, 2)
    return result


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks step_vs_plain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["resnet56:resnet20", "resnet32x4:resnet8x4"], help="TEACHER:STUDENT")
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (one step of each variant per round)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    results = [measure_pair(*pair.split(":"), args.rounds, args.batch) for pair in args.pairs]
    return {"benchmark": "training step vs the conventional way, interleaved, fp32", "machine": machine(), "results": results}
