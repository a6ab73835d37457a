"""One ndkd pipeline step in this process, alone or as one rank under torchrun (used by test_distributed.py).

usage: python ddp_worker.py VERB CONFIG [--stop-after N] [KEY=VALUE ...]   (VERB: distill | centers)

Registers a BatchNorm-free test network: with BatchNorm, each DDP process normalises its own part of
the batch, so only BN-free models give single-process weights exactly.
"""

from __future__ import annotations

import sys

from torch import nn

from ndkd import pipeline
from ndkd.config import load_config
from ndkd.models import register_model


@register_model("test_convnet_nobn", family="test", description="BN-free convnet for DDP equivalence tests")
def convnet_without_batchnorm(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )  # fmt: skip


class Stop(Exception):
    pass


def main(argv: list[str]) -> int:
    verb, path, rest = argv[0], argv[1], argv[2:]
    stop_after = None
    if rest[:1] == ["--stop-after"]:
        stop_after, rest = int(rest[1]), rest[2:]
    config = load_config(path, rest)
    if verb == "centers":
        pipeline.compute_centers(config, force=True)
        return 0

    def stop(epoch: int, record: dict) -> None:
        if epoch == stop_after:
            raise Stop

    try:
        pipeline.distill(config, progress=False, on_epoch_end=stop)
    except Stop:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
