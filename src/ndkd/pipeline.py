"""The four verbs as library functions: train a teacher, compute its class-means, distil, evaluate.

All of them read one :class:`~ndkd.config.Config` and share one run-directory layout::

    <output_dir>/<name>/teacher/                  teacher run (teacher.pt, metrics.jsonl, checkpoints/...)
    <output_dir>/<name>/class_means.safetensors   the teacher's class-means
    <output_dir>/<name>/<student name>/           one run per student (student.pt, metrics.jsonl, ...)

:func:`run_pipeline` chains them and skips every step that is already finished with the same config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ndkd.centers import compute_class_means, load_class_means, read_class_means_metadata, save_class_means
from ndkd.config import Config, DistillConfig, fingerprint, to_dict, variant_config
from ndkd.data import ImageDataset, ImageFolderDataset, load_dataset, make_loader
from ndkd.distillers import build_distiller, get_method
from ndkd.engine.checkpoint import atomic_write_text
from ndkd.engine.runtime import Runtime, setup_runtime
from ndkd.engine.evaluate import evaluate
from ndkd.engine.trainer import EpochCallback, RunInfo, Trainer
from ndkd.errors import ClassMeansError, ConfigError
from ndkd.models import create_model, embedding_dim, load_weights
from ndkd.models.weights import file_sha256
from ndkd.results import method_label
from ndkd.tables import format_text_table

logger = logging.getLogger("ndkd")
DEFAULT_STUDENT = "student"


def run_root(config: Config) -> Path:
    return Path(config.output_dir) / config.name


def teacher_dir(config: Config) -> Path:
    return run_root(config) / "teacher"


def class_means_path(config: Config) -> Path:
    """Where ND reads class-means: ``distill.nd.class_means`` if set, else the run's own file."""
    return Path(config.distill.nd.class_means) if config.distill.nd.class_means else run_root(config) / "class_means.safetensors"


def student_names(config: Config) -> list[str]:
    return [entry["name"] for entry in config.students] or [DEFAULT_STUDENT]


def student_config(config: Config, name: str) -> Config:
    """The config of student ``name`` (the base config itself when no ``students`` are listed)."""
    if not config.students and name == DEFAULT_STUDENT:
        return config
    return variant_config(config, name)


def _move_aside(path: Path, runtime: Runtime) -> None:
    """``--restart``: keep an old run under a dated name instead of deleting it (main process only)."""
    if runtime.is_main and path.exists():
        target = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(target)
        logger.info("moved the previous run %s to %s", path, target)
    runtime.barrier()


def _finished(run_dir: Path, run_fingerprint: str) -> dict | None:
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    return summary if summary.get("finished") and summary.get("fingerprint") == run_fingerprint else None


def _schedule(train) -> dict:
    """The parts of a TrainConfig that change results (the log interval does not)."""
    return {k: v for k, v in dataclasses.asdict(train).items() if k != "log_interval"}


@dataclass
class _Context:
    runtime: Runtime
    train_set: ImageDataset | ImageFolderDataset
    test_set: ImageDataset | ImageFolderDataset


def _runtime(config: Config) -> Runtime:
    return setup_runtime(config.device, config.seed, config.deterministic)


def _context(config: Config, runtime: Runtime) -> _Context:
    return _Context(runtime, load_dataset(config.data, train=True), load_dataset(config.data, train=False))


def _loaders(config: Config, context: _Context):
    """Train and test loaders sharded over the run's processes, in the memory format of the run."""
    runtime = context.runtime
    options = dict(device=runtime.device, seed=config.seed, rank=runtime.rank, world_size=runtime.world_size,
                   channels_last=config.speed.channels_last)  # fmt: skip
    return (
        make_loader(context.train_set, config.data, train=True, **options),
        make_loader(context.test_set, config.data, train=False, **options),
    )


def _train(config: Config, distiller, train_config, info: RunInfo, context: _Context, progress: bool, on_epoch_end) -> dict:
    train_loader, test_loader = _loaders(config, context)
    trainer = Trainer(
        distiller, train_loader, test_loader, train_config, info, context.runtime, progress, on_epoch_end,
        seed=config.seed, speed=config.speed, sync_bn=config.sync_bn,
    )  # fmt: skip
    return trainer.fit()


def _keep_class_names(run_dir: Path, dataset: ImageDataset | ImageFolderDataset, runtime: Runtime) -> None:
    """``classes.json`` in the run directory: index -> class name, so predictions can be read back."""
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(list(dataset.class_names), indent=1), run_dir / "classes.json")


def _augmentation_tag(config: Config) -> str:
    """What the class-means' training views were (part of their metadata: changing it recomputes them)."""
    if not config.centers.augment:
        return "none"
    if config.data.dataset == "imagefolder":
        folder = config.data.imagefolder
        return f"random_resized_crop={folder.image_size},min_scale={folder.min_scale},hflip={config.data.hflip}"
    return f"crop_padding={config.data.crop_padding},hflip={config.data.hflip}"


def teacher_weights(config: Config) -> Path:
    """The teacher's weights file: ``teacher.checkpoint`` or the one ``ndkd train-teacher`` exported."""
    if config.teacher.arch is None:
        raise ConfigError("teacher.arch is not set; name the teacher architecture (for example teacher.arch=resnet20)")
    path = Path(config.teacher.checkpoint) if config.teacher.checkpoint else teacher_dir(config) / "teacher.pt"
    if not path.is_file():
        how = "check teacher.checkpoint" if config.teacher.checkpoint else "run `ndkd train-teacher CONFIG` first"
        raise ConfigError(f"teacher weights {str(path)!r} not found; {how}")
    return path


def load_teacher(config: Config, dataset: ImageDataset, device: torch.device) -> torch.nn.Module:
    """Build ``teacher.arch`` for ``dataset`` and load its weights (strict keys and shapes)."""
    model = create_model(config.teacher.arch, dataset.num_classes, dataset.in_channels)
    load_weights(model, teacher_weights(config), arch=config.teacher.arch)
    return model.to(device).eval()


def train_teacher(config: Config, *, restart: bool = False, progress: bool = True, on_epoch_end: EpochCallback | None = None) -> dict:
    """Train ``teacher.arch`` with cross-entropy on ``teacher.train``; export ``teacher/teacher.pt``."""
    if config.teacher.arch is None:
        raise ConfigError("teacher.arch is not set; name the teacher architecture (for example teacher.arch=resnet20)")
    run_dir = teacher_dir(config)
    run_fingerprint = fingerprint(
        config.seed, config.data, config.teacher.arch, _schedule(config.teacher.train), config.speed.precision
    )
    runtime = _runtime(config)
    if restart:
        _move_aside(run_dir, runtime)
    elif (done := _finished(run_dir, run_fingerprint)) is not None:
        logger.info("teacher already trained in %s (test top-1 %.2f); skipping", run_dir, done["test_top1_last"])
        return done
    context = _context(config, runtime)
    model = create_model(config.teacher.arch, context.train_set.num_classes, context.train_set.in_channels)
    distiller = build_distiller(DistillConfig(method="none"), model, None)
    _keep_class_names(run_dir, context.train_set, runtime)
    info = RunInfo(
        run_dir, "teacher", config.teacher.arch, context.train_set.num_classes, context.train_set.in_channels, to_dict(config),
        run_fingerprint, {"seed": config.seed},
    )  # fmt: skip
    return _train(config, distiller, config.teacher.train, info, context, progress, on_epoch_end)


def compute_centers(config: Config, *, force: bool = False) -> Path:
    """Compute the teacher's class-means on the training split and save them (skipped if up to date)."""
    weights = teacher_weights(config)
    path = run_root(config) / "class_means.safetensors"
    wanted = {
        "teacher": config.teacher.arch,
        "teacher_sha256": file_sha256(weights),
        "dataset": config.data.dataset,
        "train_subset": str(config.data.train_subset),
        "seed": str(config.seed),
        "data_seed": str(config.data.seed),
        "augmentation": _augmentation_tag(config),
        "data_root": str(config.data.root),
    }
    if path.is_file() and not force:
        found = read_class_means_metadata(path)
        if all(found.get(key) == value for key, value in wanted.items()):
            logger.info("class-means in %s are up to date; skipping", path)
            return path
    context = _context(config, _runtime(config))
    runtime = context.runtime
    teacher = load_teacher(config, context.train_set, runtime.device)
    started = time.perf_counter()
    loader = make_loader(
        context.train_set, config.data, train=True, device=runtime.device, seed=config.seed, augment=config.centers.augment,
        shuffle=False, batch_size=config.centers.batch_size, rank=runtime.rank, world_size=runtime.world_size,
    )  # fmt: skip
    class_means = compute_class_means(teacher, context.train_set, runtime=runtime, loader=loader)
    counts = torch.bincount(context.train_set.labels, minlength=context.train_set.num_classes)
    class_names = json.dumps(list(context.train_set.class_names))
    if runtime.is_main:
        save_class_means(path, class_means, counts, teacher_checkpoint=str(weights), class_names=class_names, **wanted)
    runtime.barrier()
    logger.info(
        "class-means [%d x %d] of %s over %d images in %.1f s -> %s",
        class_means.shape[0], class_means.shape[1], config.teacher.arch, len(context.train_set), time.perf_counter() - started, path,
    )  # fmt: skip
    return path


def _class_means_for(config: Config, dataset: ImageDataset, teacher: torch.nn.Module, teacher_sha: str) -> tuple[torch.Tensor, str]:
    path = class_means_path(config)
    if not path.is_file() and not config.distill.nd.class_means:
        raise ClassMeansError(f"class-means {str(path)!r} not found; run `ndkd centers CONFIG` first (ND needs them)")
    class_means = load_class_means(path, num_classes=dataset.num_classes, dim=embedding_dim(teacher))
    made_from = read_class_means_metadata(path).get("teacher_sha256")
    if made_from is not None and made_from != teacher_sha:
        raise ClassMeansError(
            f"class-means {str(path)!r} were computed from another teacher checkpoint than {str(teacher_weights(config))!r}; "
            "recompute them with `ndkd centers CONFIG`"
        )
    return class_means, file_sha256(path)


def student_run_dir(config: Config, student: str, seed: int | None = None) -> Path:
    """``<output_dir>/<name>/<student>``, or ``.../<student>/seed<k>`` for a run of a multi-seed group."""
    run_dir = run_root(config) / student
    return run_dir if seed is None else run_dir / f"seed{seed}"


def distill(
    config: Config, student: str = DEFAULT_STUDENT, *, seed: int | None = None, restart: bool = False,
    progress: bool = True, on_epoch_end: EpochCallback | None = None,
) -> dict:  # fmt: skip
    """Train student ``student`` of ``config`` with its distillation method; export ``student.pt``.

    ``seed`` (a run of a multi-seed group) replaces the config's seed and trains in ``<student>/seed<k>``;
    the teacher and the class-means stay those of the config.
    """
    config = student_config(config, student)
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    run_dir = student_run_dir(config, student, seed)
    method = get_method(config.distill.method)
    needs_teacher = method.needs_teacher or config.distill.nd.weight > 0
    teacher_sha = file_sha256(teacher_weights(config)) if needs_teacher else None
    class_means_sha = None
    if config.distill.nd.weight > 0:
        class_means_sha = file_sha256(class_means_path(config)) if class_means_path(config).is_file() else "missing"
    run_fingerprint = fingerprint(
        config.seed, config.data, config.student, _schedule(config.train), config.distill,
        config.teacher.arch if needs_teacher else None, teacher_sha, class_means_sha, config.speed.precision,
    )  # fmt: skip
    runtime = _runtime(config)
    if restart:
        _move_aside(run_dir, runtime)
    elif (done := _finished(run_dir, run_fingerprint)) is not None:
        logger.info("student %r already trained in %s (test top-1 %.2f); skipping", student, run_dir, done["test_top1_last"])
        return done
    context = _context(config, runtime)
    dataset = context.train_set
    model = create_model(config.student.arch, dataset.num_classes, dataset.in_channels)
    if config.student.checkpoint:
        load_weights(model, config.student.checkpoint, arch=config.student.arch)
    teacher = class_means = None
    if needs_teacher:
        teacher = load_teacher(config, dataset, context.runtime.device)
    if config.distill.nd.weight > 0:
        class_means, _ = _class_means_for(config, dataset, teacher, teacher_sha)
    distiller = build_distiller(config.distill, model, teacher, class_means, dataset.input_shape)
    extra = {"student": student, "seed": config.seed, "method": config.distill.method, "nd_weight": config.distill.nd.weight}
    _keep_class_names(run_dir, dataset, runtime)
    info = RunInfo(run_dir, "student", config.student.arch, dataset.num_classes, dataset.in_channels, to_dict(config), run_fingerprint, extra)
    return _train(config, distiller, config.train, info, context, progress, on_epoch_end)


def evaluate_weights(config: Config, arch: str, weights: str | Path) -> dict[str, float]:
    """Test-split top-1/top-5/loss of ``arch`` loaded from ``weights`` on ``config.data``."""
    runtime = _runtime(config)
    test_set = load_dataset(config.data, train=False)
    model = create_model(arch, test_set.num_classes, test_set.in_channels)
    load_weights(model, weights, arch=arch)
    loader = make_loader(test_set, config.data, train=False, device=runtime.device, rank=runtime.rank, world_size=runtime.world_size)
    return evaluate(model.to(runtime.device), loader, runtime)


def run_pipeline(config: Config, *, seeds: list[int] | None = None, restart: bool = False, progress: bool = True) -> list[dict]:
    """Teacher -> class-means -> every student; finished steps with the same config are skipped.

    ``seeds``: train every student once per seed (``<student>/seed<k>``), with the one teacher and
    class-means of the config. Returns one row per trained network (teacher first) with its seed and
    test top-1 (last and best epoch).
    """
    if restart:
        _move_aside(run_root(config), _runtime(config))
    rows = []
    if config.teacher.checkpoint is None and config.teacher.arch is not None:
        summary = train_teacher(config, progress=progress)
        rows.append({"name": "teacher", "arch": config.teacher.arch, "method": "-", "seed": config.seed, **_scores(summary), "run_dir": str(teacher_dir(config))})
    names = student_names(config)
    configs = {name: student_config(config, name) for name in names}
    if any(c.distill.nd.weight > 0 and not c.distill.nd.class_means for c in configs.values()):
        compute_centers(config)
    for name in names:
        for seed in seeds or [None]:
            summary = distill(config, name, seed=seed, progress=progress)
            row = {"name": name, "arch": configs[name].student.arch, "method": method_label(to_dict(configs[name].distill))}
            rows.append({**row, "seed": summary["seed"], **_scores(summary), "run_dir": str(student_run_dir(config, name, seed))})
    return rows


def _scores(summary: dict) -> dict:
    return {"top1_last": summary["test_top1_last"], "top1_best": summary["test_top1_best"], "best_epoch": summary["best_epoch"]}


def format_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`run_pipeline` rows."""
    header = ("run", "arch", "method", "seed", "top-1 last", "top-1 best (epoch)", "directory")
    body = [
        (r["name"], r["arch"], r["method"], str(r["seed"]), f"{r['top1_last']:.2f}", f"{r['top1_best']:.2f} ({r['best_epoch']})", r["run_dir"])
        for r in rows
    ]
    return format_text_table([header, *body])
