"""``ndkd report``: a Markdown report with figures, read from finished run directories.

:func:`write_report` finds the runs under the given folders (:func:`ndkd.results.find_runs`), groups
them over seeds and writes into ``out``:

* ``report.md``: the test top-1 of every group (mean ± sample std over seeds, last and best epoch side
  by side, the recipe's claimed number), the figures and the embedding statistics;
* ``test_top1.png`` and ``train_losses.png``: per-epoch curves (:mod:`ndkd.report_plots`);
* ``embeddings.png``: KD++'s central evidence on the test split, the distribution of the embedding
  norms of teacher and student and of the cosine between each student embedding and the teacher's
  class-mean of its true class (:func:`embedding_statistics`; skipped with ``embeddings=False``).

Embeddings are computed on the first seed of each student group that has a teacher, in eval mode
without gradients, a batch at a time. When the widths differ the cosine uses the student embedding
after the run's ND projector (rebuilt from ``nd.projector.*`` of ``checkpoints/last.pt``); without a
projector (ND off) it is undefined and left out, with the reason in the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ndkd.centers import load_class_means
from ndkd.config import Config, load_config
from ndkd.data import load_dataset, make_loader
from ndkd.engine.checkpoint import load_checkpoint
from ndkd.engine.runtime import resolve_device
from ndkd.losses.nd import class_mean_directions
from ndkd.errors import ConfigError, NdkdError
from ndkd.models import FeatureTap, create_model, embedding_dim, load_weights
from ndkd.models.projector import make_projector
from ndkd.pipeline import class_means_path, load_teacher
from ndkd.results import RunGroup, RunRecord, find_runs, group_runs, group_table

logger = logging.getLogger("ndkd")
PROJECTOR_PREFIX = "nd.projector."
EPS = 1e-12  # guards the cosine's denominator against a zero vector


@dataclass
class EmbeddingStats:
    """Test-split embedding statistics of one student run and its teacher (1-d tensors of N values).

    ``student_norms``: |s| of the student's own embedding (its classifier's input).
    ``projected_norms``: |P(s)| after the ND projector (None when the widths agree or there is none).
    ``cosines``: cos(s, c_y) (on P(s) when projected), None when undefined, ``note`` saying why.
    ``teacher_cosines``: cos(t, c_y) of the teacher itself, the reference (None without class-means).
    """

    label: str
    run_dir: Path
    seed: int
    student_norms: torch.Tensor
    teacher_norms: torch.Tensor
    projected_norms: torch.Tensor | None
    cosines: torch.Tensor | None
    teacher_cosines: torch.Tensor | None
    note: str = ""

    @property
    def count(self) -> int:
        return int(self.student_norms.numel())


def group_labels(groups: list[RunGroup]) -> list[str]:
    """``name``, or ``experiment/name`` when the groups come from several experiments (as in the table)."""
    several = len({group.experiment for group in groups}) > 1
    return [f"{g.experiment}/{g.name}" if several else g.name for g in groups]


def run_config(run: RunRecord) -> Config:
    """The run's resolved config, with ``output_dir`` pointed at where the run lies now.

    The experiment folder is the nearest parent of the run directory named like the config's ``name``;
    when the runs were moved (or ``output_dir`` was relative to another folder) the teacher and the
    class-means are found next to the run, as the pipeline laid them out.
    """
    config = load_config(run.run_dir / "config.yaml")
    for parent in run.run_dir.resolve().parents:
        if parent.name == config.name:
            return dataclasses.replace(config, output_dir=str(parent.parent))
    return config


def _cosine_to_class_means(embedding: torch.Tensor, class_means: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """cos(e_i, c_{y_i}) for a batch: embedding [B, D], class_means [K, D], labels [B] -> [B]."""
    directions = class_mean_directions(class_means, labels)  # the unit c_y / |c_y| the ND loss uses
    return torch.linalg.vecdot(embedding, directions) / embedding.norm(dim=1).clamp_min(EPS)


def _projector(run: RunRecord, student_dim: int, teacher_dim: int) -> torch.nn.Module | None:
    """The run's trained ND projector in eval mode, or None when ``checkpoints/last.pt`` has none."""
    path = run.run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        return None
    state = load_checkpoint(path)["student"]
    weights = {key[len(PROJECTOR_PREFIX) :]: value for key, value in state.items() if key.startswith(PROJECTOR_PREFIX)}
    if not weights:
        return None
    projector = make_projector(student_dim, teacher_dim)
    projector.load_state_dict(weights, strict=True)
    return projector.eval()


@torch.no_grad()
def embedding_statistics(run: RunRecord, label: str = "", device: str = "auto") -> EmbeddingStats:
    """Norms and class-mean cosines of ``run``'s student and its teacher over the test split.

    Raises :class:`~ndkd.errors.NdkdError` when the teacher, the data or a weights file cannot be
    read, and :class:`ConfigError` when the run's config names no teacher.
    """
    config = run_config(run)
    if config.teacher.arch is None:
        raise ConfigError(f"{run.run_dir}: the config names no teacher (teacher.arch)")
    target = resolve_device(device)
    test_set = load_dataset(config.data, train=False)
    teacher = load_teacher(config, test_set, target)
    summary = json.loads((run.run_dir / "summary.json").read_text(encoding="utf-8"))
    student = create_model(run.arch, test_set.num_classes, test_set.in_channels)
    load_weights(student, run.run_dir / summary.get("weights", "student.pt"), arch=run.arch)
    student = student.to(target).eval()
    student_dim, teacher_dim = embedding_dim(student), embedding_dim(teacher)
    projector, note = None, ""
    if student_dim != teacher_dim:
        projector = _projector(run, student_dim, teacher_dim)
        if projector is None:
            note = (
                f"the student's embedding is {student_dim}-d and the teacher's {teacher_dim}-d, and the run has no "
                "ND projector (ND is off), so the student's cosine to the teacher's class-means is undefined"
            )
        else:
            projector = projector.to(target)
    class_means = None
    means_file = class_means_path(config)
    if means_file.is_file():
        class_means = load_class_means(means_file, num_classes=test_set.num_classes, dim=teacher_dim).to(target)
    elif not note:
        note = f"the class-means file {str(means_file)!r} is not there (ND off everywhere, or moved)"
    loader = make_loader(test_set, config.data, train=False, device=target)
    parts: dict[str, list[torch.Tensor]] = {"student": [], "teacher": [], "projected": [], "cosine": [], "teacher_cosine": []}
    student_tap, teacher_tap = FeatureTap(student), FeatureTap(teacher)
    try:
        for images, labels in loader:
            embedding = student_tap(images).embedding.float()
            teacher_embedding = teacher_tap(images).embedding.float()
            parts["student"].append(embedding.norm(dim=1))
            parts["teacher"].append(teacher_embedding.norm(dim=1))
            if projector is not None:
                embedding = projector(embedding)
                parts["projected"].append(embedding.norm(dim=1))
            if class_means is not None:
                parts["teacher_cosine"].append(_cosine_to_class_means(teacher_embedding, class_means, labels))
                if student_dim == teacher_dim or projector is not None:
                    parts["cosine"].append(_cosine_to_class_means(embedding, class_means, labels))
    finally:
        student_tap.remove()
        teacher_tap.remove()
    joined = {key: torch.cat(values).cpu() if values else None for key, values in parts.items()}
    return EmbeddingStats(
        label or run.name, run.run_dir, run.seed, joined["student"], joined["teacher"], joined["projected"],
        joined["cosine"], joined["teacher_cosine"], note,
    )  # fmt: skip


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    """A GitHub-flavoured Markdown table: the first row is the header."""
    lines = ["| " + " | ".join(map(_cell, rows[0])) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows[1:]]
    return "\n".join(lines)


def top1_rows(groups: list[RunGroup]) -> list[tuple[str, ...]]:
    """:func:`ndkd.results.group_table` with the number of seeds beside the seed list."""
    header, *body = group_table(groups)
    return [header[:3] + ("n",) + header[3:]] + [row[:3] + (str(len(g.runs)),) + row[3:] for row, g in zip(body, groups)]


def _mean(values: torch.Tensor | None, digits: int) -> str:
    return "-" if values is None else f"{values.double().mean().item():.{digits}f}"


def embedding_rows(stats: list[EmbeddingStats]) -> list[tuple[str, ...]]:
    """Header plus one row per student (and its teacher's mean norm and cosine as the reference)."""
    header = ("run", "seed", "test images", "mean norm |s|", "mean norm after projector", "mean cos(s, c_y)",
              "teacher mean norm |t|", "teacher mean cos(t, c_y)")  # fmt: skip
    body = [
        (s.label, str(s.seed), str(s.count), _mean(s.student_norms, 3), _mean(s.projected_norms, 3), _mean(s.cosines, 4),
         _mean(s.teacher_norms, 3), _mean(s.teacher_cosines, 4))
        for s in stats
    ]  # fmt: skip
    return [header, *body]


TOP1_NOTE = (
    "Test top-1 (%) per group: mean ± sample standard deviation (n − 1 in the denominator) over its n seeds "
    "(a single run shows no ±). **Last** (the weights at the end of training) is the honest number. **Best** is, "
    "per run, the highest test top-1 over the epochs: it selects on the test set, so it is optimistic and is "
    "only shown beside last. *Claimed* is the published number of the recipe (`recipe.claimed_top1`, "
    "`recipe.claimed_teacher_top1`), `-` when the config has none."
)
CURVES_NOTE = (
    "One line per group: the mean over its seeds at each epoch; the shaded band spans the lowest to the "
    "highest seed. The loss panels show each term as it was optimised (already multiplied by its weight and "
    "warm-up), averaged over the epoch's training samples; `loss` is their sum. A teacher's curves follow its "
    "own schedule (`teacher.train`). A panel whose y axis says *log scale above x* is linear up to x and "
    "logarithmic above, because one group's values dwarf the others'."
)
EMBEDDINGS_NOTE = (
    "KD++'s evidence, on the test split (first seed of each group): left, the L2 norms of the embeddings "
    "(the input of the final classifier) of the teacher (grey) and of the student; right, the cosine between "
    "each embedding and the teacher's class-mean c_y of its true class y (training-set means), the teacher's own "
    "cosines as a grey band (5th to 95th percentile) and its mean. ND pulls the "
    "student's norm up to the teacher's and its direction onto c_y: with ND the student's histograms move "
    "towards the teacher's. When the widths differ the cosine (and the norm after projector) is taken after "
    "the run's ND projector, which maps the student embedding to the teacher's width."
)


def write_report(
    paths: list[str | Path], out: str | Path | None = None, *, embeddings: bool = True, device: str = "auto"
) -> Path:
    """Write ``report.md`` and its figures into ``out`` (default ``<first path>/report``); return its path.

    Raises :class:`ConfigError` when a path does not exist or none holds a finished run.
    """
    from ndkd.report_plots import group_colors, plot_embeddings, plot_loss_terms, plot_top1_curves

    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"run directory {str(path)!r} does not exist")
    groups = group_runs(find_runs(list(paths)))
    experiments = list(dict.fromkeys(group.experiment for group in groups))
    groups.sort(key=lambda g: (experiments.index(g.experiment), g.runs[0].role != "teacher"))  # teacher first
    if not groups:
        where = ", ".join(repr(str(p)) for p in paths)
        raise ConfigError(f"no finished run in {where}; a run directory holds a summary.json written at the end of `ndkd run`")
    if embeddings:
        resolve_device(device)  # a bad --device is a usage error, not a note per group
    out = Path(out) if out is not None else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "embeddings.png").unlink(missing_ok=True)  # a figure of an earlier report must not outlive its section
    labels = group_labels(groups)
    total = sum(len(g.runs) for g in groups)
    lines = ["# ndkd report", "", f"{total} finished run(s) in {len(groups)} group(s), read from "
             + ", ".join(f"`{p}`" for p in paths) + ".", "", "## Test top-1", "", markdown_table(top1_rows(groups)), "",
             TOP1_NOTE, "", "## Training curves", ""]  # fmt: skip
    plot_top1_curves(groups, labels, out / "test_top1.png")
    terms = plot_loss_terms(groups, labels, out / "train_losses.png")
    lines += ["![test top-1 per epoch](test_top1.png)", "", "![training loss terms per epoch](train_losses.png)", "",
              CURVES_NOTE + " Terms found: " + ", ".join(f"`{t}`" for t in terms) + ".", "", "## Embeddings", ""]  # fmt: skip
    if not embeddings:
        lines += ["Left out (`--no-embeddings`).", ""]
    else:
        stats, skipped = [], []
        for group, label in zip(groups, labels):
            if group.runs[0].role != "student":
                continue
            if group.runs[0].config.get("teacher", {}).get("arch") is None:
                skipped.append(f"- `{label}`: no teacher in its config, nothing to compare with.")
                continue
            logger.info("embedding statistics of %s (seed %d)", label, group.runs[0].seed)
            try:
                stats.append(embedding_statistics(group.runs[0], label, device))
            except NdkdError as error:
                skipped.append(f"- `{label}`: left out, {error}")
        if stats:
            plot_embeddings(stats, group_colors(groups, labels), out / "embeddings.png")
            lines += [markdown_table(embedding_rows(stats)), "", "![embedding norms and cosines](embeddings.png)", "",
                      EMBEDDINGS_NOTE, ""]  # fmt: skip
            lines += [f"- `{s.label}`: cosine left out: {s.note}." for s in stats if s.note]
        lines += skipped or ([] if stats else ["No student group with a teacher."])
        lines.append("")
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
