"""The shipped recipes as a table: one row per student of every YAML config under a folder.

``ndkd recipes [DIR]`` prints it (``--json`` for machines). A row is read from the validated config of
that student (:func:`ndkd.pipeline.student_config`), so it shows exactly what ``ndkd distill CONFIG
--student NAME`` trains, next to the published top-1 of the ``recipe`` section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ndkd
from ndkd.errors import ConfigError
from ndkd.tables import format_text_table


@dataclass(frozen=True)
class RecipeRow:
    """One student of one recipe file, with the settings that define it."""

    name: str  # "<file path under DIR, no suffix>:<student>", e.g. "cifar100/resnet56_resnet20:kdpp"
    file: str  # the YAML file
    student_name: str  # the entry's name (``ndkd distill FILE --student NAME``)
    dataset: str  # data.dataset
    data_root: Optional[str]  # data.root
    teacher: Optional[str]  # teacher.arch
    teacher_checkpoint: Optional[str]  # teacher.checkpoint
    student: str  # student.arch
    method: str  # distill.method
    weight: Optional[float]  # distill.weight (λ of the method's term); None for method "none"
    options: dict[str, Any]  # distill.options, every option resolved
    warmup_epochs: int  # distill.warmup_epochs
    nd_variant: Optional[str]  # distill.nd.variant, None when ND is off
    nd_weight: float  # distill.nd.weight (0: off)
    nd_warmup: bool  # distill.nd.warmup
    lr: float  # train.lr
    batch_size: int  # data.batch_size (the global batch)
    epochs: int  # train.epochs
    milestones: list[int]  # train.milestones
    momentum: float  # train.momentum
    nesterov: bool  # train.nesterov
    weight_decay: float  # train.weight_decay
    seed: int  # seed
    claimed_top1: Optional[float]  # recipe.claimed_top1 (%), None where nothing was published
    claimed_teacher_top1: Optional[float]  # recipe.claimed_teacher_top1 (%)
    source: str  # recipe.source

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return dataclasses.asdict(self)


def default_recipes_dir() -> Path:
    """``./configs`` when it exists, else the ``configs/`` folder of the ndkd source checkout."""
    local = Path("configs")
    return local if local.is_dir() else Path(ndkd.__file__).resolve().parents[2] / "configs"


def recipe_files(directory: str | Path) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` file under ``directory`` (recursively, sorted), or ``[directory]`` for a file.

    Raises :class:`ConfigError` when the path does not exist or holds no YAML file.
    """
    path = Path(directory)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"recipe folder {str(path)!r} does not exist; pass a folder of YAML configs (for example configs/)")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ConfigError(f"no recipe (*.yaml) under {str(path)!r}")
    return files


def _row(label: str, file: Path, student_name: str, config) -> RecipeRow:
    distill, train, recipe = config.distill, config.train, config.recipe
    nd_on = distill.nd.weight > 0
    return RecipeRow(
        name=f"{label}:{student_name}",
        file=str(file),
        student_name=student_name,
        dataset=config.data.dataset,
        data_root=config.data.root,
        teacher=config.teacher.arch,
        teacher_checkpoint=config.teacher.checkpoint,
        student=config.student.arch,
        method=distill.method,
        weight=None if distill.method == "none" else distill.weight,
        options=dict(distill.options),
        warmup_epochs=distill.warmup_epochs,
        nd_variant=distill.nd.variant if nd_on else None,
        nd_weight=distill.nd.weight,
        nd_warmup=distill.nd.warmup,
        lr=train.lr,
        batch_size=config.data.batch_size,
        epochs=train.epochs,
        milestones=list(train.milestones),
        momentum=train.momentum,
        nesterov=train.nesterov,
        weight_decay=train.weight_decay,
        seed=config.seed,
        claimed_top1=recipe.claimed_top1,
        claimed_teacher_top1=recipe.claimed_teacher_top1,
        source=recipe.source,
    )


def list_recipes(directory: str | Path | None = None) -> list[RecipeRow]:
    """One :class:`RecipeRow` per student of every recipe under ``directory`` (default: :func:`default_recipes_dir`).

    Every file is validated (``load_config``) and so is every student entry; the first invalid one raises
    :class:`ConfigError` naming the file.
    """
    from ndkd.config import load_config
    from ndkd.pipeline import student_config, student_names

    root = Path(directory) if directory is not None else default_recipes_dir()
    rows = []
    for file in recipe_files(root):
        label = file.with_suffix("").relative_to(root).as_posix() if root.is_dir() else file.stem
        config = load_config(file)
        for name in student_names(config):
            rows.append(_row(label, file, name, student_config(config, name)))
    return rows


def _number(value: float) -> str:
    return f"{value:g}"


def describe_weights(row: RecipeRow) -> str:
    """``weight=1 temperature=4``: the method's weight and its numeric (float) options; ``-`` for ``none``."""
    if row.weight is None:
        return "-"
    floats = [f"{key}={_number(value)}" for key, value in row.options.items() if isinstance(value, float)]
    return " ".join([f"weight={_number(row.weight)}", *floats])


def describe_nd(row: RecipeRow) -> str:
    """``nd 2``, ``nd 1 (ramped)`` (``distill.nd.warmup``) or ``-`` when ND is off."""
    if row.nd_variant is None:
        return "-"
    return f"{row.nd_variant} {_number(row.nd_weight)}" + (" (ramped)" if row.nd_warmup and row.warmup_epochs else "")


def format_recipes(rows: list[RecipeRow]) -> str:
    """Plain-text table of ``rows``: name, data, models, method, ND, weights, schedule and claimed top-1."""
    header = ("recipe", "dataset", "teacher", "student", "method", "ND", "method weights", "lr", "batch", "epochs", "warm-up", "claimed top-1")
    body = [
        (
            row.name, row.dataset, row.teacher or "-", row.student, row.method, describe_nd(row), describe_weights(row),
            _number(row.lr), str(row.batch_size), str(row.epochs), str(row.warmup_epochs),
            "-" if row.claimed_top1 is None else f"{row.claimed_top1:.2f}",
        )
        for row in rows
    ]  # fmt: skip
    return format_text_table([header, *body])
