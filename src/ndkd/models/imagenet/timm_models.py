"""Any timm classifier as ``timm/<name>`` (timm is an optional dependency: ``pip install 'ndkd[timm]'``).

Models are created with ``pretrained=False`` (nothing is downloaded); trained weights come from a file on
disk (``teacher.checkpoint``; timm's ``.safetensors`` / ``.bin`` / ``.pth`` files load as they are). The
embedding is the input of the head Linear (``get_classifier()``: pre-logits, e.g. the CLS token after
the final norm for ViTs) and the stages are timm's own ``feature_info``.
"""

from __future__ import annotations

import difflib

from torch import nn

from ndkd.errors import ConfigError
from ndkd.models.registry import TIMM_PREFIX, ModelEntry


def _timm():
    try:
        import timm
    except ImportError as error:
        raise ConfigError(
            "timm models need the optional dependency timm: pip install 'ndkd[timm]' (or pip install timm)"
        ) from error
    return timm


def timm_available() -> bool:
    try:
        _timm()
    except ConfigError:
        return False
    return True


def timm_model_names() -> list[str]:
    """Every architecture timm can build (its catalogue, without pretrained tags)."""
    return list(_timm().list_models())


def timm_entry(name: str) -> ModelEntry:
    """A registry entry for timm's ``name``; an unknown name gets the closest timm names."""
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"timm has no model {name!r}.{hint} `python -c 'import timm; print(timm.list_models())'` lists them")

    def builder(num_classes: int, in_channels: int = 3) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)

    input_size = 224
    try:
        input_size = int(timm.models.get_pretrained_cfg(name).input_size[-1])
    except Exception:  # models without a default config keep 224
        pass
    return ModelEntry(TIMM_PREFIX + name, builder, "timm", f"timm {name}", input_size)
