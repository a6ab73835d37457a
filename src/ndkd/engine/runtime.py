"""Where a run executes: device, seeding and determinism, decided in one place.

Nothing else in ndkd picks a device or seeds a generator; code receives a :class:`Runtime` (or the
device of its inputs) instead of calling ``.cuda()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ndkd.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """The device a run uses and its place among processes (rank 0 of 1 for a single process)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device {name!r} is not a valid torch device (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but CUDA is not available here; use device=cpu or auto")
    return device


def setup_runtime(device: str = "auto", seed: int = 0, deterministic: bool = False) -> Runtime:
    """Resolve the device, seed torch's global generators and set the determinism switch."""
    resolved = resolve_device(device)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    elif resolved.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(device=resolved)
