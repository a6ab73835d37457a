"""Accuracy on real data at CPU scale: every student of a recipe over several seeds, mean ± std.

``python -m benchmarks accuracy [--config configs/fashion_mnist/ablation.yaml] [--seeds 0,1,2]`` runs
``ndkd run CONFIG --seeds ...`` through :func:`ndkd.pipeline.run_pipeline`: the teacher is trained once
(and reused when its run is already finished in ``--output-dir``), its class-means computed once, then
every student of the recipe trains once per seed with the same schedule. Reported per student: the
last-epoch test top-1 of each seed, their mean and sample standard deviation, the best-epoch mean
beside it, the training time, and the difference of the mean to the baseline student (``--baseline``,
the student trained alone with cross-entropy) measured in the same run. ``ndkd report`` on the output
folder draws the curves and the norm/cosine distributions of the same runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks._common import machine
from ndkd import pipeline
from ndkd.config import load_config
from ndkd.engine.runtime import resolve_device
from ndkd.results import group_runs, read_run


def _train_seconds(run_dir: str) -> float:
    """Training time of a run summed over its epochs (evaluation excluded), from metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return round(sum(json.loads(line)["time"]["train_s"] for line in lines if line.strip()), 1)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/fashion_mnist/ablation.yaml", help="the recipe (default: the Fashion-MNIST ablation)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of every student (default 0,1,2)")
    parser.add_argument("--baseline", default="ce", help="student the others are compared with (default ce)")
    parser.add_argument("--output-dir", default="runs", help="where the runs go; finished runs there are reused (default runs)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides (train.epochs=2 ...)")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    config = load_config(args.config, [f"output_dir={args.output_dir}", *args.overrides])
    started = time.perf_counter()
    rows = pipeline.run_pipeline(config, seeds=seeds, progress=False)
    wall_seconds = time.perf_counter() - started
    teacher = next((row for row in rows if row["name"] == "teacher"), None)
    groups = group_runs([read_run(row["run_dir"]) for row in rows if row["name"] != "teacher"])
    baseline = next((group for group in groups if group.name == args.baseline), None)
    students = []
    for group in groups:
        (last_mean, last_std), (best_mean, best_std) = group.last, group.best
        entry = {
            "name": group.name, "method": group.method, "seeds": group.seeds,
            "top1_last": [run.top1_last for run in group.runs],
            "top1_last_mean": round(last_mean, 2), "top1_last_std": round(last_std, 2),
            "top1_best_mean": round(best_mean, 2), "top1_best_std": round(best_std, 2),
            "train_seconds": [_train_seconds(run.run_dir) for run in group.runs],
        }  # fmt: skip
        if baseline is not None:
            entry["top1_last_mean_vs_baseline"] = round(last_mean - baseline.last[0], 2)
        students.append(entry)
    return {
        "benchmark": f"accuracy over seeds: {args.config}",
        "machine": {**machine(), "run_device": str(resolve_device(config.device)), "cpus": os.cpu_count()},
        "config": args.config,
        "overrides": args.overrides,
        "seeds": seeds,
        "teacher": None if teacher is None else {"arch": teacher["arch"], "top1_last": teacher["top1_last"]},
        "baseline": args.baseline,
        "students": students,
        "wall_seconds": round(wall_seconds, 1),
        "std": "sample standard deviation over seeds (n - 1)",
    }
