"""CIFAR model zoo (32x32 inputs; any resolution works thanks to adaptive pooling).

Every model keeps the state_dict keys and shapes of the shared pretrained CIFAR-100 teacher checkpoints;
``manifest.json`` (package data, a copy of the reference manifest) records them per architecture with
parameter counts, embedding widths and stage shapes. Checkpoint errors compare files against it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from ndkd.models.cifar import mobilenetv2, resnet, resnet_large, shufflenet, vgg, wrn  # noqa: F401  (registers the models)


@functools.lru_cache(maxsize=1)
def load_manifest() -> dict[str, dict]:
    """{architecture: {"state_dict": [[key, shape], ...], "params", "embedding_dim", "stage_shapes", ...}} (100 classes)."""
    return json.loads((resources.files(__package__) / "manifest.json").read_text(encoding="utf-8"))
