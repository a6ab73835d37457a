"""The figures of ``ndkd report`` (PNG, matplotlib's Agg canvas: no display, no pyplot state).

matplotlib is imported inside the plotting functions, so importing ndkd does not need it. Every group
keeps one colour in every figure (:func:`group_colors`); teachers are drawn in grey.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ndkd.results import RunGroup

if TYPE_CHECKING:  # only for annotations; matplotlib is imported lazily
    from matplotlib.figure import Figure

    from ndkd.report import EmbeddingStats

TEACHER_COLOR = "0.45"
DPI = 110


def group_colors(groups: list[RunGroup], labels: list[str]) -> dict[str, str]:
    """label -> colour: grey for teachers; for the students in group order matplotlib's tab10 (without
    its grey, C7, which would read as a teacher), then six darker hues, so that an ablation of up to 15
    students has no two alike."""
    palette = [f"C{i}" for i in range(10) if i != 7] + ["black", "navy", "darkgoldenrod", "teal", "crimson", "indigo"]
    colors, index = {}, 0
    for group, label in zip(groups, labels):
        if group.runs[0].role == "teacher":
            colors[label] = TEACHER_COLOR
        else:
            colors[label] = palette[index % len(palette)]
            index += 1
    return colors


def curve(group: RunGroup, pick: Callable[[dict], float | None]) -> tuple[np.ndarray, ...]:
    """(epochs, mean, min, max) over the group's seeds of ``pick(metrics record)``, per epoch.

    Only epochs every seed logged (with a value) are kept; all arrays are empty when there is none.
    """
    per_run = []
    for run in group.runs:
        values = {record["epoch"]: pick(record) for record in run.metrics()}
        per_run.append({epoch: value for epoch, value in values.items() if value is not None})
    epochs = sorted(set.intersection(*(set(values) for values in per_run)))
    table = np.array([[values[epoch] for epoch in epochs] for values in per_run], dtype=float).reshape(len(per_run), len(epochs))
    return np.array(epochs, dtype=int), table.mean(axis=0), table.min(axis=0), table.max(axis=0)


def loss_terms(groups: list[RunGroup]) -> list[str]:
    """The training loss terms logged by any run: ``loss`` (the sum) first, then in the order first met."""
    terms: list[str] = []
    for group in groups:
        for run in group.runs:
            for record in run.metrics():
                terms += [name for name in record.get("train", {}) if name != "top1" and name not in terms]
    return sorted(terms, key=lambda name: name != "loss")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _draw_curve(ax, epochs: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray, label: str, color: str) -> None:
    from matplotlib.ticker import MaxNLocator

    marker = "o" if len(epochs) <= 15 else None
    ax.plot(epochs, mean, color=color, label=label, marker=marker, markersize=3.5, linewidth=1.6)
    if np.any(high > low):
        ax.fill_between(epochs, low, high, color=color, alpha=0.18, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _compress_outliers(ax, curves: list[np.ndarray], spread: float = 30.0) -> None:
    """A symmetric-log y axis when one curve (a diverging run) dwarfs the others, so they stay readable.

    Linear up to the median of the curves' values, logarithmic above; used only when the largest value
    is more than ``spread`` times that median.
    """
    values = np.abs(np.concatenate(curves)) if curves else np.zeros(0)
    values = values[values > 0]
    if len(values) and values.max() > spread * np.median(values):
        ax.set_yscale("symlog", linthresh=float(np.median(values)))
        ax.annotate(f"log scale above {np.median(values):.2g}", (0.98, 0.97), xycoords="axes fraction", ha="right", va="top", fontsize="x-small", color="0.3")


def _legend_label(group: RunGroup, label: str) -> str:
    method = "" if group.method == "-" else f", {group.method}"
    return f"{label} ({group.arch}{method}, n={len(group.runs)})"


def plot_top1_curves(groups: list[RunGroup], labels: list[str], path: Path) -> None:
    """Test top-1 (%) per epoch, one line per group (mean over seeds, band min..max); legend outside."""
    colors = group_colors(groups, labels)
    figure = _figure(10.0, 5.0)
    ax = figure.add_subplot()
    for group, label in zip(groups, labels):
        epochs, mean, low, high = curve(group, lambda record: record["test"]["top1"])
        _draw_curve(ax, epochs, mean, low, high, _legend_label(group, label), colors[label])
    ax.set_title("Test top-1 per epoch (line: mean over seeds; band: lowest to highest seed)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    figure.legend(loc="outside right upper", fontsize="small", title="group (arch, method, seeds)", title_fontsize="small")
    figure.savefig(path)


def plot_loss_terms(groups: list[RunGroup], labels: list[str], path: Path) -> list[str]:
    """One small panel per training loss term, one line per group that logs it; returns the terms."""
    colors = group_colors(groups, labels)
    terms = loss_terms(groups)
    columns = min(3, max(1, len(terms)))
    rows = -(-len(terms) // columns)
    figure = _figure(4.2 * columns, 3.1 * rows + 0.9)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    drawn: dict[str, object] = {}
    for ax, term in zip(axes, terms):
        means = []
        for group, label in zip(groups, labels):
            epochs, mean, low, high = curve(group, lambda record: record.get("train", {}).get(term))
            if len(epochs):
                _draw_curve(ax, epochs, mean, low, high, _legend_label(group, label), colors[label])
                means.append(mean)
        _compress_outliers(ax, means)
        ax.set_title("loss: sum of the terms" if term == "loss" else f"term: {term}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (nats / sample)" if term in ("loss", "ce", "kd") else "training loss / sample")
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    for ax in axes[len(terms) :]:
        ax.set_axis_off()
    figure.suptitle("Training loss terms per epoch, weighted as optimised (mean over seeds; band: min to max)")
    figure.legend(list(drawn.values()), list(drawn), loc="outside lower center", ncol=min(3, len(drawn)), fontsize="small")
    figure.savefig(path)
    return terms


def _bins(arrays: list[np.ndarray], low: float | None = None, high: float | None = None, count: int = 40) -> np.ndarray:
    values = np.concatenate(arrays)
    start, stop = float(values.min()), float(values.max())
    pad = 0.02 * (stop - start) or 0.5 * abs(start) or 1.0
    start, stop = start - pad, stop + pad
    if low is not None:
        start = max(start, low)
    if high is not None:
        stop = min(stop, high)
    return np.linspace(start, stop, count + 1)


def _histogram(ax, values: np.ndarray, bins: np.ndarray, label: str, color: str, digits: int, filled: bool = True) -> None:
    mean = float(values.mean())
    kind = {"histtype": "stepfilled", "alpha": 0.45} if filled else {"histtype": "step", "linewidth": 1.6}
    ax.hist(values, bins=bins, color=color, label=f"{label} (mean {mean:.{digits}f})", **kind)
    ax.axvline(mean, color=color, linestyle="--", linewidth=1.2)


def _reference_band(ax, values: np.ndarray, label: str) -> None:
    """The teacher's cosines as a band (5th to 95th percentile) and its mean: a tall narrow spike otherwise
    flattens the student's histogram."""
    low, high = np.percentile(values, [5, 95])
    ax.axvspan(low, high, color=TEACHER_COLOR, alpha=0.25, label=f"{label}: 5-95% of images")
    ax.axvline(float(values.mean()), color=TEACHER_COLOR, linestyle="--", linewidth=1.2, label=f"{label}: mean {values.mean():.3f}")


def plot_embeddings(stats: list[EmbeddingStats], colors: dict[str, str], path: Path) -> None:
    """One row per student: histograms of embedding norms (left) and of cos(s, c_y) (right), teacher in grey."""
    figure = _figure(12.0, 2.7 * len(stats) + 0.7)
    axes = figure.subplots(len(stats), 2, squeeze=False)
    fields = ("student_norms", "teacher_norms", "projected_norms", "cosines", "teacher_cosines")
    per_row = [{name: None if getattr(s, name) is None else getattr(s, name).double().numpy() for name in fields} for s in stats]
    norm_bins = _bins([row[name] for row in per_row for name in fields[:3] if row[name] is not None])
    cosines = [row[name] for row in per_row for name in fields[3:] if row[name] is not None]
    cosine_bins = _bins(cosines, -1.0, 1.0) if cosines else None
    for (norm_ax, cosine_ax), s, arrays in zip(axes, stats, per_row):
        color = colors.get(s.label, "C0")
        _histogram(norm_ax, arrays["teacher_norms"], norm_bins, "teacher |t|", TEACHER_COLOR, 2)
        _histogram(norm_ax, arrays["student_norms"], norm_bins, "student |s|", color, 2)
        if arrays["projected_norms"] is not None:
            _histogram(norm_ax, arrays["projected_norms"], norm_bins, "student after projector |P(s)|", color, 2, filled=False)
        norm_ax.set_title(f"{s.label} (seed {s.seed}): embedding norms", fontsize="medium")
        norm_ax.set_xlabel("L2 norm of the embedding (feature units)")
        if s.cosines is None:
            note = "cosine to c_y left out:\n" + textwrap.fill(s.note, 60)
            cosine_ax.text(0.5, 0.5, note, ha="center", va="center", fontsize="small", transform=cosine_ax.transAxes)
            cosine_ax.set_axis_off()
        else:
            if arrays["teacher_cosines"] is not None:
                _reference_band(cosine_ax, arrays["teacher_cosines"], "teacher cos(t, c_y)")
            what = "cos(P(s), c_y)" if s.projected_norms is not None else "cos(s, c_y)"
            _histogram(cosine_ax, arrays["cosines"], cosine_bins, f"student {what}", color, 3)
            cosine_ax.set_title(f"{s.label}: cosine to the class-mean of the true class", fontsize="medium")
            cosine_ax.set_xlabel("cosine (unitless, -1 to 1)")
        for ax in (norm_ax, cosine_ax):
            if ax.axison:
                ax.set_ylabel("test images")
                ax.set_ylim(0, ax.get_ylim()[1] * 1.5)  # headroom: the legend sits above the bars
                ax.legend(fontsize="small", loc="upper left", framealpha=0.85)
                ax.grid(alpha=0.3)
    figure.suptitle("Test-split embeddings of teacher (grey) and student, first seed of each group; dashed lines: means")
    figure.savefig(path)
