"""Training-step time (compute only, random weights, one synthetic CIFAR-100 batch) per method and switch.

For each teacher -> student pair, method and speed switch, a fresh process builds the distiller,
runs ``--steps`` optimisation steps with ndkd's own ``training_step`` (the trainer's step) after two
warm-up steps, and reports the median ms/step, images/s, its peak resident memory and the loss values
of the steps. Baselines measured in the same run: the teacher's forward alone and the student trained
alone with cross-entropy; each switch is compared with fp32 on the same pair and method (speed-up and
the largest loss difference over the steps, same initial weights and batches).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks._common import machine, peak_rss_mb, ratio, run_in_subprocess

METHODS = {
    # name: (distill.method, method options, ND weight)
    "student_ce": ("none", {}, 0.0),
    "kd": ("kd", {"temperature": 4.0}, 0.0),
    "kdpp": ("kd", {"temperature": 4.0}, 1.0),
    "dkdpp": ("dkd", {}, 1.0),
    "reviewkdpp": ("reviewkd", {}, 1.0),
    "fitnetpp": ("fitnet", {}, 1.0),
    "pefdpp": ("pefd", {}, 1.0),
    "diffkdpp": ("diffkd", {}, 1.0),
}
SWITCHES = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    # bf16 convolutions are fast on CPUs with AMX/AVX512-BF16 only in the channels_last layout
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    "fold_teacher_bn": {"fold_teacher_bn": True},
    "compile": {"compile": True},
}
PEERS_MS = {("resnet56", "resnet20", "kd"): 248.0, ("resnet32x4", "resnet8x4", "kd"): 1278.0}  # mdistiller, same machine kind


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, batch: int, generator: torch.Generator) -> torch.nn.Module:
    """Give a randomly initialised network the BatchNorm statistics of its own activations.

    Random weights with BatchNorm at its initial running statistics (mean 0, var 1) blow activations up
    layer after layer in eval mode (features of 1e3-1e5), which makes feature losses meaningless. A few
    train-mode forwards with a cumulative average set the statistics, as a trained teacher has them.
    """
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in batchnorms:
        module.reset_running_stats()
        module.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    for _ in range(3):
        model(torch.randn(batch, 3, 32, 32, generator=generator))
    for module in batchnorms:
        module.momentum = 0.1
    return model.eval()


def _one(teacher_name: str, student_name: str, method: str, switch: str, steps: int, batch: int) -> dict:
    from ndkd.config import DistillConfig, NDConfig, SpeedConfig
    from ndkd.distillers import build_distiller
    from ndkd.engine.acceleration import apply_speed_switches, autocast
    from ndkd.engine.trainer import training_step
    from ndkd.models import create_model, embedding_dim

    torch.manual_seed(0)
    teacher = calibrate_batchnorm(create_model(teacher_name, num_classes=100), batch, torch.Generator().manual_seed(3))
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(batch) % 100
    speed = SpeedConfig(**SWITCHES[switch])
    if method == "teacher_forward":
        model = teacher
        if speed.channels_last:
            model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
        if speed.compile:
            model.compile()

        def step() -> None:
            with torch.no_grad(), autocast(images.device, speed.precision):
                model(images)

        losses = []
    else:
        name, options, nd_weight = METHODS[method]
        student = create_model(student_name, num_classes=100)
        config = DistillConfig(method=name, options=options, warmup_epochs=0, nd=NDConfig(weight=nd_weight))
        class_means = torch.rand(100, embedding_dim(teacher), generator=torch.Generator().manual_seed(2))
        needs_teacher = name != "none" or nd_weight > 0
        distiller = build_distiller(config, student, teacher if needs_teacher else None, class_means if nd_weight else None, (3, 32, 32))
        apply_speed_switches(distiller, speed, torch.device("cpu"))
        if speed.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        distiller.train()
        optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.01, momentum=0.9)
        losses = []

        def step() -> None:
            _, _, total = training_step(distiller, optimizer, images, labels, epoch=1, precision=speed.precision)
            losses.append(total.item())  # benchmark only: one sync per step, the same for every configuration

    started = time.perf_counter()
    for _ in range(2):
        step()
    warmup_s = time.perf_counter() - started
    samples = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000.0)
    ms = statistics.median(samples)
    return {
        "ms_per_step": round(ms, 1),
        "images_per_s": round(batch / ms * 1000.0, 1),
        "warmup_s": round(warmup_s, 1),
        "peak_rss_mb": peak_rss_mb(),
        "losses": losses,
    }


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks train_step", description=__doc__)
    parser.add_argument("--pairs", nargs="+", default=["resnet56:resnet20", "resnet32x4:resnet8x4"], help="TEACHER:STUDENT")
    parser.add_argument("--methods", nargs="+", default=["kd", "kdpp", "dkdpp", "reviewkdpp"], choices=list(METHODS))
    parser.add_argument("--switches", nargs="+", default=list(SWITCHES), choices=list(SWITCHES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--one", nargs=3, metavar=("PAIR", "METHOD", "SWITCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        pair, method, switch = args.one
        teacher, student = pair.split(":")
        return _one(teacher, student, method, switch, args.steps, args.batch)

    results = []
    for pair in args.pairs:
        teacher, student = pair.split(":")
        common = ["--steps", str(args.steps), "--batch", str(args.batch)]
        fp32 = {m: run_in_subprocess("train_step", ["--one", pair, m, "fp32", *common]) for m in ["teacher_forward", "student_ce", *args.methods]}
        entry = {
            "teacher": teacher, "student": student, "batch": args.batch,
            "baselines_fp32": {m: {k: v for k, v in fp32[m].items() if k != "losses"} for m in ("teacher_forward", "student_ce")},
            "methods": {},
        }  # fmt: skip
        for method in args.methods:
            rows = {"fp32": {k: v for k, v in fp32[method].items() if k != "losses"}}
            peer = PEERS_MS.get((teacher, student, method))
            if peer:
                rows["fp32"]["mdistiller_ms_per_step"] = peer
                rows["fp32"]["speedup_vs_mdistiller"] = ratio(peer, fp32[method]["ms_per_step"])
            rows["fp32"]["vs_student_alone"] = round(fp32[method]["ms_per_step"] / fp32["student_ce"]["ms_per_step"], 2)
            for switch in args.switches:
                if switch == "fp32":
                    continue
                run = run_in_subprocess("train_step", ["--one", pair, method, switch, *common])
                difference = max(abs(a - b) for a, b in zip(run["losses"], fp32[method]["losses"]))
                rows[switch] = {
                    **{k: v for k, v in run.items() if k != "losses"},
                    "speedup_vs_fp32": ratio(fp32[method]["ms_per_step"], run["ms_per_step"]),
                    "max_abs_loss_difference": float(f"{difference:.3g}"),
                }
            entry["methods"][method] = rows
        if "kd" in fp32 and "kdpp" in fp32:
            entry["nd_overhead_percent"] = round(100.0 * (fp32["kdpp"]["ms_per_step"] / fp32["kd"]["ms_per_step"] - 1.0), 1)
        results.append(entry)
    return {"benchmark": "training step, compute only (random weights, synthetic batch)", "machine": machine(), "results": results}
