"""Atomic, safe checkpoint files.

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed over
the target, so a crash mid-write never leaves a truncated ``last.pt``: the previous good one survives.
Checkpoints are read back with ``weights_only=True`` (tensors, numbers, strings, lists and dicts only).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ndkd.errors import CheckpointError


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_save(payload: Any, path: str | Path) -> None:
    """``torch.save(payload, path)``, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by the trainer (weights_only, on the CPU)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {error}") from error
    if not isinstance(payload, dict) or "student" not in payload or "epoch" not in payload:
        raise CheckpointError(f"{str(path)!r} is not an ndkd training checkpoint (no 'student'/'epoch' entries)")
    return payload
