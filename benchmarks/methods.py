"""Every registered method, with and without ND, on Fashion-MNIST: test top-1 and wall time per run.

``python -m benchmarks methods [--epochs 2 --subset 5000 ...]``. The teacher is trained once (or reused
from ``--output-dir`` when it is already there with the same settings), its class-means computed once,
and then each method of the registry trains the same student with the same seed and schedule through
:func:`ndkd.pipeline.distill`, first alone and then with ``distill.nd.weight`` > 0. Methods registered
later (feature distillers included) are picked up automatically. A method that cannot run in this
setting says so the way it tells a user, by raising an :class:`ndkd.errors.NdkdError` when it is
built; the run is reported under ``errors`` with that message and the benchmark goes on.

Baseline: method ``none`` without ND (the student alone, cross-entropy) from the same run; every row
carries its top-1 difference and wall-time ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import machine
from ndkd import pipeline
from ndkd.config import config_from_dict, fingerprint, to_dict
from ndkd.distillers import list_methods
from ndkd.engine.runtime import resolve_device
from ndkd.errors import NdkdError

BASELINE = ("none", False)
# settings of a registered method that are worth a row of their own: name -> (method, options)
EXTRA_ROWS = {"kd_logit_projector": ("kd", {"logit_projector": True})}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks methods", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="student epochs (default 2)")
    parser.add_argument("--teacher-epochs", type=int, default=3, help="teacher epochs (default 3)")
    parser.add_argument("--subset", type=int, default=5000, help="training images (seeded draw; default 5000)")
    parser.add_argument("--teacher", default="resnet20", help="teacher architecture (default resnet20)")
    parser.add_argument("--student", default="resnet8", help="student architecture (default resnet8)")
    parser.add_argument(
        "--warmup-epochs", type=int,
        help="distill.warmup_epochs (default: --epochs, a ramp over the whole short run, or 0 for a single epoch; a "
        "0 -> 1 jump after one epoch at lr 0.1 made DKD (beta 8) and projected-logit KD diverge here)",
    )  # fmt: skip
    parser.add_argument("--nd-weight", type=float, default=1.0, help="distill.nd.weight of the '++' runs (default 1.0)")
    parser.add_argument("--nd-variant", default="nd", help="distill.nd.variant of the '++' runs (default nd)")
    parser.add_argument("--methods", help="comma-separated methods to run (default: every registered method)")
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--data-root", help="Fashion-MNIST folder (default: $NDKD_DATA or Debian's)")
    parser.add_argument("--output-dir", help="keep runs here and reuse a finished teacher (default: a temporary folder)")
    return parser


def _config(args: argparse.Namespace, output_dir: Path, methods: list[str]) -> dict:
    milestones = lambda epochs: [max(1, (3 * epochs) // 4)] if epochs > 1 else []  # noqa: E731
    rows = {method: (method, {}) for method in methods}
    rows.update({name: spec for name, spec in EXTRA_ROWS.items() if spec[0] in methods})
    nd = {"weight": args.nd_weight, "variant": args.nd_variant}
    if args.nd_variant == "infonce":
        nd["temperature"] = 0.1  # required for infonce; the paper's value is unknown
    students = []
    for name, (method, options) in rows.items():
        students.append({"name": name, "distill": {"method": method, "options": options}})
        students.append({"name": f"{name}_nd", "distill": {"method": method, "options": options, "nd": nd}})
    return {
        "name": "methods",
        "output_dir": str(output_dir),
        "seed": args.seed,
        "device": args.device,
        "data": {"dataset": "fashion_mnist", "root": args.data_root, "train_subset": args.subset, "batch_size": args.batch_size,
                 "eval_batch_size": 1000, "crop_padding": 2},
        "teacher": {"arch": args.teacher, "train": {"epochs": args.teacher_epochs, "lr": args.lr, "nesterov": True,
                                                    "milestones": milestones(args.teacher_epochs)}},
        "student": {"arch": args.student},
        "train": {"epochs": args.epochs, "lr": args.lr, "nesterov": True, "milestones": milestones(args.epochs)},
        "distill": {"method": "none", "warmup_epochs": args.warmup_epochs},
        "students": students,
    }  # fmt: skip


def _images_per_s(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return round(sum(r["time"]["images_per_s"] for r in records) / len(records), 1)


def main(argv: list[str]) -> dict:
    args = _parser().parse_args(argv)
    if args.warmup_epochs is None:
        args.warmup_epochs = args.epochs if args.epochs > 1 else 0  # one epoch: a ramp would keep the terms at 0
    if args.threads:
        torch.set_num_threads(args.threads)
    registered = [entry.name for entry in list_methods() if not entry.name.startswith("test_")]
    methods = args.methods.split(",") if args.methods else registered
    methods = [m for m in methods if m not in set(filter(None, args.skip.split(",")))]
    if "none" not in methods:
        methods.insert(0, "none")  # the baseline is always measured
    temporary = args.output_dir is None
    output_dir = Path(tempfile.mkdtemp(prefix="ndkd-bench-")) if temporary else Path(args.output_dir)
    try:
        data = _config(args, output_dir, methods)
        # one folder per teacher setting (every resolved default included), so a finished teacher is reused
        # exactly when the pipeline would accept it
        resolved = to_dict(config_from_dict(data))
        data["name"] = "methods_" + fingerprint(resolved["teacher"], resolved["data"], resolved["seed"])
        config = config_from_dict(data)
        teacher_summary = pipeline.teacher_dir(config) / "summary.json"
        before = teacher_summary.stat().st_mtime_ns if teacher_summary.is_file() else None
        started = time.perf_counter()
        teacher = pipeline.train_teacher(config, progress=False)
        teacher_seconds = time.perf_counter() - started
        teacher_reused = before is not None and teacher_summary.stat().st_mtime_ns == before
        # the students read the exported teacher through teacher.checkpoint, as a user's recipe would
        data["teacher"]["checkpoint"] = str(pipeline.teacher_dir(config) / "teacher.pt")
        config = config_from_dict(data)
        pipeline.compute_centers(config)
        rows, errors = [], []
        for entry in config.students:
            name = entry["name"]
            run_dir = pipeline.run_root(config) / name
            shutil.rmtree(run_dir, ignore_errors=True)  # timings must be fresh
            with_nd = name.endswith("_nd")
            label = {"name": name.removesuffix("_nd"), "method": entry["distill"]["method"], "options": entry["distill"]["options"], "nd": with_nd}
            started = time.perf_counter()
            try:
                summary = pipeline.distill(config, name, progress=False)
            except NdkdError as error:
                errors.append({**label, "error": str(error)})
                continue
            rows.append({
                **label, "top1_last": summary["test_top1_last"], "top1_best": summary["test_top1_best"],
                "seconds": round(time.perf_counter() - started, 2), "train_images_per_s": _images_per_s(run_dir),
            })  # fmt: skip
        baseline = next((r for r in rows if (r["name"], r["nd"]) == BASELINE), None)
        for row in rows:
            if baseline is not None:
                row["top1_vs_baseline"] = round(row["top1_last"] - baseline["top1_last"], 2)
                row["seconds_vs_baseline"] = round(row["seconds"] / baseline["seconds"], 2)
        return {
            "benchmark": "methods",
            "settings": {k: v for k, v in vars(args).items() if k not in ("output_dir",)},
            "machine": {**machine(), "run_device": str(resolve_device(args.device)), "cpus": os.cpu_count()},
            "teacher": {
                "arch": args.teacher, "top1": teacher["test_top1_last"], "seconds": round(teacher_seconds, 2), "reused": teacher_reused,
            },  # fmt: skip
            "baseline": {"method": BASELINE[0], "nd": BASELINE[1]},
            "runs": rows,
            "errors": errors,
        }
    finally:
        if temporary:
            shutil.rmtree(output_dir, ignore_errors=True)
