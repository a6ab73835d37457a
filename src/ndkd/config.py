"""Typed configuration: the schema of a recipe, its validation and the students it declares.

A recipe is validated into :class:`Config`. Unknown keys and wrong types are rejected with the
offending key, the allowed keys (with a close-match suggestion) and where the value came from (the
file name or the override). Method options (``distill.options``) are checked against the options
declared by the chosen distiller. Nothing in a config is ever executed. The generic machinery (typed
dataclasses from YAML mappings, dotted overrides, safe reading) lives in :mod:`ndkd.typed_yaml`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ndkd.errors import ConfigError
from ndkd.typed_yaml import (  # noqa: F401  (parse_override: part of this module's API)
    Sources,
    apply_overrides,
    build_dataclass,
    build_options,
    join_path,
    merge_mappings,
    parse_override,
    read_yaml,
)

DatasetName = Literal["fashion_mnist", "cifar10", "cifar100", "synthetic", "imagefolder"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class SyntheticConfig:
    """Sizes of the synthetic dataset (used by tests and smoke runs)."""

    num_train: int = 512
    num_test: int = 256
    num_classes: int = 10
    image_size: int = 16
    channels: int = 3


@dataclass
class ImageFolderConfig:
    """``data.dataset: imagefolder``: folders, transforms and loading (ImageNet's defaults)."""

    train_dir: str = "train"  # under data.root; one subfolder per class
    val_dir: str = "val"  # under data.root; evaluation split, same class folder names
    image_size: int = 224  # training RandomResizedCrop size and evaluation CenterCrop size
    resize_size: int = 256  # evaluation: shorter side resized to this before the centre crop
    min_scale: float = 0.08  # training crops cover a fraction U(min_scale, 1) of the image area
    channels: int = 3  # 3: grey/palette/RGBA images converted to RGB; 1: all converted to grey
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # per channel, images scaled to [0, 1]
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    num_workers: int = 4  # DataLoader worker processes decoding images
    pin_memory: bool = True  # pinned host memory for batches (used when the device is CUDA)


@dataclass
class DataConfig:
    dataset: DatasetName = "fashion_mnist"
    root: Optional[str] = None  # folder with the dataset files; default: Debian's location or $NDKD_DATA
    download: bool = False  # allow torchvision to download a missing dataset
    train_subset: Optional[int] = None  # train on this many samples (a draw seeded by data.seed); None = all
    # seed of the data itself (the train_subset draw, the synthetic images), apart from the run's `seed`,
    # so that the runs of a multi-seed group and their teacher all see the same images
    seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 512
    augment: bool = True  # pad-and-random-crop + horizontal flip on training batches
    crop_padding: int = 4
    hflip: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    imagefolder: ImageFolderConfig = field(default_factory=ImageFolderConfig)


@dataclass
class TrainConfig:
    """SGD with a step schedule (lr multiplied by ``lr_decay`` at each milestone epoch)."""

    epochs: int = 240
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = 0.1
    log_interval: int = 50  # steps between progress updates (the only host syncs of a training epoch)


@dataclass
class TeacherConfig:
    arch: Optional[str] = None
    checkpoint: Optional[str] = None  # trained weights; if unset, `ndkd run` trains the teacher
    train: TrainConfig = field(default_factory=TrainConfig)  # schedule for `ndkd train-teacher`


@dataclass
class StudentConfig:
    arch: str = "resnet8"
    checkpoint: Optional[str] = None  # optional initial weights


NDVariant = Literal["nd", "cosine", "infonce", "norm_l2", "sifn"]


@dataclass
class NDConfig:
    """The ND regulariser (the "++"): active when ``weight`` > 0; ``variant`` picks the loss form."""

    weight: float = 0.0
    variant: NDVariant = "nd"  # nd (KD++), or the ablations cosine, infonce, norm_l2, sifn
    warmup: bool = False  # ramp ND with the base term over warmup_epochs (official ImageNet DKD++ only)
    class_means: Optional[str] = None  # safetensors or official JSON file; default: the run's own
    projector_init: Literal["auto", "cifar", "imagenet"] = "auto"  # auto: imagenet for inputs wider than 64 px
    temperature: Optional[float] = None  # infonce only, required there (the paper's value is not known)
    delta_r: float = 1.0  # sifn only: norm increase per step (the SAFN default)


@dataclass
class DistillConfig:
    method: str = "none"  # a registered distiller: `ndkd methods` lists them
    ce_weight: float = 1.0
    weight: float = 1.0  # multiplies the base distillation term(s)
    warmup_epochs: int = 0  # linear ramp min(1, epoch / warmup_epochs) of the base term, epoch 0-based
    options: dict = field(default_factory=dict)  # method options, validated against the method
    nd: NDConfig = field(default_factory=NDConfig)


@dataclass
class CentersConfig:
    augment: bool = True  # average over one training-augmented view of each image (as the official code)
    batch_size: int = 512


@dataclass
class SpeedConfig:
    """Acceleration switches; docs/performance.md gives their measured speed-up and effect on the loss."""

    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 (GPU) adds a GradScaler
    channels_last: bool = False  # NHWC memory format for models and batches
    fold_teacher_bn: bool = False  # fold the frozen teacher's BatchNorm into its convolutions
    compile: bool = False  # torch.compile student and teacher


@dataclass
class RecipeConfig:
    """Where a recipe comes from and what it claims (read by `ndkd recipes` and `ndkd report`; never trained on)."""

    source: str = ""  # the paper table / official script the hyper-parameters are taken from
    claimed_top1: Optional[float] = None  # the published test top-1 (%) of this run
    claimed_teacher_top1: Optional[float] = None  # the published test top-1 (%) of its teacher


@dataclass
class Config:
    name: str = "experiment"
    output_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    deterministic: bool = False  # torch.use_deterministic_algorithms
    sync_bn: bool = False  # SyncBatchNorm for the student in multi-GPU runs (torchrun; GPU only)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    centers: CentersConfig = field(default_factory=CentersConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    # students distilled by `ndkd run`: each a name plus overrides of `student`, `train`, `distill`, `seed`, `recipe`
    students: list[dict] = field(default_factory=list)


_VARIANT_KEYS = ("name", "student", "train", "distill", "seed", "recipe")
def _validate_method(config: Config, path: str, sources: Sources) -> None:
    from ndkd.distillers.registry import get_method

    try:
        method = get_method(config.distill.method)
    except ConfigError as error:
        raise sources.error(join_path(path, "distill.method"), str(error)) from None
    options = build_options(method.options, config.distill.options, join_path(path, "distill.options"), sources)
    config.distill.options = dataclasses.asdict(options)


def _check_ranges(config: Config, sources: Sources) -> None:
    """Values that type-check but cannot work (a zero batch size, an lr of 0, unsorted milestones...)."""
    checks = [
        ("data.batch_size", config.data.batch_size >= 1, "at least 1"),
        ("data.eval_batch_size", config.data.eval_batch_size >= 1, "at least 1"),
        ("data.crop_padding", config.data.crop_padding >= 0, "0 or more"),
        ("data.train_subset", config.data.train_subset is None or config.data.train_subset >= 1, "at least 1 (or null)"),
        ("distill.warmup_epochs", config.distill.warmup_epochs >= 0, "0 or more"),
        ("distill.nd.weight", config.distill.nd.weight >= 0, "0 (off) or more"),
        ("distill.nd.delta_r", config.distill.nd.delta_r > 0, "positive"),
        (
            "distill.nd.temperature",
            config.distill.nd.temperature is None or config.distill.nd.temperature > 0,
            "positive (or null)",
        ),
        (
            "distill.nd.temperature",
            config.distill.nd.variant != "infonce" or config.distill.nd.temperature is not None,
            "set for distill.nd.variant 'infonce' (the paper's value is not known; 0.1 is a common choice)",
        ),
        ("centers.batch_size", config.centers.batch_size >= 1, "at least 1"),
        ("data.imagefolder.image_size", config.data.imagefolder.image_size >= 1, "at least 1"),
        ("data.imagefolder.resize_size", config.data.imagefolder.resize_size >= config.data.imagefolder.image_size, "at least data.imagefolder.image_size"),
        ("data.imagefolder.min_scale", 0 < config.data.imagefolder.min_scale <= 1, "in (0, 1]"),
        ("data.imagefolder.channels", config.data.imagefolder.channels in (1, 3), "1 or 3"),
        ("data.imagefolder.num_workers", config.data.imagefolder.num_workers >= 0, "0 or more"),
        (
            "data.imagefolder.mean",
            len(config.data.imagefolder.mean) == len(config.data.imagefolder.std) == config.data.imagefolder.channels,
            "a list of data.imagefolder.channels values (as long as data.imagefolder.std)",
        ),
        ("data.imagefolder.std", all(v > 0 for v in config.data.imagefolder.std), "positive values"),
    ]
    for prefix, train in (("train", config.train), ("teacher.train", config.teacher.train)):
        checks += [
            (f"{prefix}.epochs", train.epochs >= 1, "at least 1"),
            (f"{prefix}.lr", train.lr > 0, "positive"),
            (f"{prefix}.log_interval", train.log_interval >= 1, "at least 1"),
            (f"{prefix}.milestones", train.milestones == sorted(set(train.milestones)), "strictly increasing epochs"),
        ]
    for path, ok, expected in checks:
        if not ok:
            value = value_at(config, path)
            raise sources.error(path, f"{path!r} must be {expected}, got {value!r}")


def value_at(config: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a config object (``"train.lr"``)."""
    for part in path.split("."):
        config = getattr(config, part)
    return config


def config_from_dict(data: dict, source: str = "config", overrides: dict[str, str] | None = None) -> Config:
    """Validate a raw mapping into a :class:`Config` (method options and ``students`` included)."""
    sources = Sources(source, overrides)
    config = build_dataclass(Config, data, "", sources)
    _validate_method(config, "", sources)
    _check_ranges(config, sources)
    # command-line overrides win over the file, student entries included: variant_config applies them again
    config._command_line_overrides = dict(overrides or {})
    names = set()
    for index, variant in enumerate(config.students):
        where = f"students[{index}]"
        unknown = [key for key in variant if key not in _VARIANT_KEYS]
        if unknown:
            raise sources.error(where, f"unknown key {where}.{unknown[0]!r}; a student entry may set: {', '.join(_VARIANT_KEYS)}")
        name = variant.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name in ("teacher",):
            raise sources.error(where, f"{where}.name must be a folder-safe name other than 'teacher', got {name!r}")
        if name in names:
            raise sources.error(where, f"{where}.name {name!r} is used twice")
        names.add(name)
        variant_config(config, name, sources)  # validate now, not half-way through `ndkd run`
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (YAML), apply dotted ``overrides`` and validate."""
    data = read_yaml(path)
    applied = apply_overrides(data, list(overrides or []))
    return config_from_dict(data, str(path), applied)


def variant_config(config: Config, name: str, sources: Sources | None = None) -> Config:
    """The config of student ``name`` of ``config.students``: the base config with that entry's overrides.

    Dotted command-line overrides (``load_config(path, overrides)``) are applied on top of the entry, so
    ``distill.nd.weight=1`` reaches every student, also those whose entry sets ``distill.nd.weight``.
    """
    matches = [v for v in config.students if v.get("name") == name]
    if not matches:
        known = ", ".join(v.get("name", "?") for v in config.students) or "none"
        raise ConfigError(f"no student named {name!r} in this config (students: {known})")
    index = config.students.index(matches[0])
    base = to_dict(config)
    base["students"] = []
    if base["distill"]["method"] != matches[0].get("distill", {}).get("method", base["distill"]["method"]):
        base["distill"]["options"] = {}  # the base method's options do not apply to another method
    data = merge_mappings(base, {k: v for k, v in matches[0].items() if k != "name"})
    command_line = getattr(config, "_command_line_overrides", {})
    apply_overrides(data, [text for key, text in command_line.items() if key.split(".")[0] in _VARIANT_KEYS])
    sources = sources or Sources("config", command_line)
    try:
        built = build_dataclass(Config, data, "", sources)
        _validate_method(built, "", sources)
        _check_ranges(built, sources)
    except ConfigError as error:
        raise ConfigError(f"{error} (in students[{index}], {name!r})") from None
    return built


def to_dict(config: Any) -> dict:
    """Plain nested dict of a config (what is written to config.yaml)."""
    return dataclasses.asdict(config)


def dump_config(config: Config | dict) -> str:
    """The resolved config (a Config or its dict) as YAML text."""
    data = config if isinstance(config, dict) else to_dict(config)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def fingerprint(*sections: Any) -> str:
    """Stable short hash of config sections, used to decide whether a finished step can be reused."""
    payload = json.dumps([dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
