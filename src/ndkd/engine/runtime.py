"""Where a run executes: device, process group, seeding and determinism, decided in one place.

Nothing else in ndkd picks a device, initialises torch.distributed or seeds a generator; code receives
a :class:`Runtime` (or the device of its inputs) instead of calling ``.cuda()``.

Multi-process runs are launched by ``torchrun`` (one process per GPU, or several CPU processes):
the environment variables it sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) select the process
group, with NCCL on GPUs and gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ndkd.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """The device a process uses and its place among the processes of the run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op in a single-process run)."""
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place, and return it (no-op in a single-process run)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` as given (checked).

    Under torchrun, ``auto`` and ``cuda`` mean the GPU of this process's local rank.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device {name!r} is not a valid torch device (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was requested but CUDA is not available here; use device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _process_group_from_environment() -> tuple[int, int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def setup_runtime(device: str = "auto", seed: int = 0, deterministic: bool = False) -> Runtime:
    """Resolve the device, join the torchrun process group if there is one, seed torch.

    Every process seeds the same way here, so models are initialised identically on all ranks;
    the trainer reseeds per (epoch, rank) for dropout and other random layers.
    """
    rank, world_size, local_rank = _process_group_from_environment()
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
            dist.init_process_group(backend="nccl", device_id=resolved)
        else:
            dist.init_process_group(backend="gloo")
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif resolved.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(device=resolved, rank=rank, world_size=world_size)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the global torch generator for one epoch of one process (dropout, noise in methods).

    A pure function of (seed, epoch, rank): resuming after epoch k needs no saved RNG state, and
    different ranks draw different dropout masks.
    """
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)
