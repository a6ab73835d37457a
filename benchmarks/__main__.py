"""Entry point: ``python -m benchmarks NAME [options]`` runs ``benchmarks/NAME.py`` and prints its JSON.

A benchmark module defines ``main(argv: list[str]) -> dict``; every figure it reports comes with the
baseline measured in the same run and their ratio. Timings live here, never in tests.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print("usage: python -m benchmarks NAME [options]   (NAME --help for its options)")
        print("benchmarks: " + (", ".join(names) or "none yet"))
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in names:
        print(f"unknown benchmark {argv[0]!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    result = importlib.import_module(f"benchmarks.{name}").main(rest)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
