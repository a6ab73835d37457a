"""Finished runs read back from their directories, grouped over seeds.

A run directory is any folder holding a ``summary.json`` with ``"finished": true`` (written last by the
trainer), its resolved ``config.yaml`` and ``metrics.jsonl``. Runs of the same experiment (the config's
``name``) and the same student name (``teacher`` for the teacher) form a *group*: the runs of
``ndkd run CONFIG --seeds 0,1,2``. A group reports the mean and the sample standard deviation (n - 1)
of the last-epoch test top-1, the best-epoch one beside it, and the recipe's claimed number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ndkd.errors import ConfigError


@dataclass
class RunRecord:
    """One finished run: where it is, what it trained and what it reached."""

    run_dir: Path
    experiment: str  # the config's `name`
    name: str  # the student's name in the config, or "teacher"
    role: str  # "teacher" or "student"
    arch: str
    method: str  # "kd + ND(2)", "dkd", "-" for a teacher
    seed: int
    top1_last: float
    top1_best: float
    best_epoch: int
    claimed_top1: float | None
    config: dict = field(repr=False)

    def metrics(self) -> list[dict]:
        """The per-epoch records of ``metrics.jsonl``."""
        text = (self.run_dir / "metrics.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class RunGroup:
    """The runs of one experiment and student over seeds."""

    experiment: str
    name: str
    runs: list[RunRecord]

    @property
    def arch(self) -> str:
        return self.runs[0].arch

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def claimed_top1(self) -> float | None:
        return self.runs[0].claimed_top1

    @property
    def last(self) -> tuple[float, float]:
        """(mean, std) of the last-epoch test top-1 over the seeds."""
        return mean_std([run.top1_last for run in self.runs])

    @property
    def best(self) -> tuple[float, float]:
        """(mean, std) of the best-epoch test top-1 over the seeds (selected on the test set)."""
        return mean_std([run.top1_best for run in self.runs])


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def method_label(distill: dict) -> str:
    """``kd``, ``kd + ND(2)``, ``kd + cosine(1)``: the base method and the regulariser, from a config dict."""
    nd = distill.get("nd", {})
    if not nd.get("weight"):
        return distill["method"]
    variant = "ND" if nd.get("variant", "nd") == "nd" else nd["variant"]
    return f"{distill['method']} + {variant}({nd['weight']:g})"


def read_run(run_dir: str | Path) -> RunRecord | None:
    """The run in ``run_dir``, or None when it holds no finished run."""
    run_dir = Path(run_dir)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    if not summary_path.is_file() or not config_path.is_file():
        return None
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if not summary.get("finished"):
        return None
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    teacher = summary["role"] == "teacher"
    recipe = config.get("recipe") or {}
    return RunRecord(
        run_dir=run_dir,
        experiment=config["name"],
        name="teacher" if teacher else summary.get("student", run_dir.name),
        role=summary["role"],
        arch=summary["arch"],
        method="-" if teacher else method_label(config["distill"]),
        seed=int(summary.get("seed", config["seed"])),
        top1_last=float(summary["test_top1_last"]),
        top1_best=float(summary["test_top1_best"]),
        best_epoch=int(summary["best_epoch"]),
        claimed_top1=recipe.get("claimed_teacher_top1" if teacher else "claimed_top1"),
        config=config,
    )


def find_runs(paths: list[str | Path]) -> list[RunRecord]:
    """Every finished run in or under ``paths`` (each a run directory or a folder of them), in path order.

    Runs moved aside by ``--restart`` (``*.old-<date>``) are left out.
    """
    records, seen = [], set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError(f"{str(path)!r} is not a directory; give run directories or folders holding them")
        candidates = [path] + sorted(p.parent for p in path.rglob("summary.json") if p.parent != path)
        for run_dir in candidates:
            if any(".old-" in part for part in run_dir.relative_to(path).parts) or run_dir.resolve() in seen:
                continue
            record = read_run(run_dir)
            if record is not None:
                seen.add(run_dir.resolve())
                records.append(record)
    return records


def group_runs(records: list[RunRecord]) -> list[RunGroup]:
    """Runs grouped by (experiment, name), groups and runs in the order first met, runs sorted by seed."""
    groups: dict[tuple[str, str], RunGroup] = {}
    for record in records:
        key = (record.experiment, record.name)
        groups.setdefault(key, RunGroup(record.experiment, record.name, [])).runs.append(record)
    for group in groups.values():
        group.runs.sort(key=lambda run: run.seed)
    return list(groups.values())


def format_mean_std(mean_and_std: tuple[float, float], count: int) -> str:
    """``72.53 ± 0.21`` (or ``72.53`` for a single run)."""
    mean, std = mean_and_std
    return f"{mean:.2f}" if count == 1 else f"{mean:.2f} ± {std:.2f}"


def group_table(groups: list[RunGroup]) -> list[tuple[str, ...]]:
    """Header plus one row per group: name, arch, method, seeds, top-1 last, top-1 best, claimed."""
    header = ("run", "arch", "method", "seeds", "top-1 last", "top-1 best", "claimed")
    rows = [
        (
            group.name if len({g.experiment for g in groups}) == 1 else f"{group.experiment}/{group.name}",
            group.arch,
            group.method,
            ",".join(map(str, group.seeds)),
            format_mean_std(group.last, len(group.runs)),
            format_mean_std(group.best, len(group.runs)),
            "-" if group.claimed_top1 is None else f"{group.claimed_top1:.2f}",
        )
        for group in groups
    ]
    return [header, *rows]
