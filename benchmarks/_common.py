"""Shared measurement helpers for the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch


def machine() -> dict:
    """What the figures were measured on."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
    }


def time_call(function: Callable[[], object], repeats: int, warmup: int = 2, sync: Callable[[], None] | None = None) -> dict:
    """Median and minimum wall time (ms) of ``function()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    if sync:
        sync()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        if sync:
            sync()
        samples.append((time.perf_counter() - started) * 1000.0)
    return {"median_ms": round(statistics.median(samples), 4), "min_ms": round(min(samples), 4), "repeats": repeats}


def ratio(baseline_ms: float, ours_ms: float) -> float:
    """How many times faster ours is than the baseline."""
    return round(baseline_ms / ours_ms, 2)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def run_in_subprocess(module: str, args: list[str]) -> dict:
    """Run ``python -m benchmarks <module> args`` in a fresh process and return its JSON (clean peak memory)."""
    result = subprocess.run([sys.executable, "-m", "benchmarks", module, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.{module} {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)
