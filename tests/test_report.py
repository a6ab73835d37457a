"""`ndkd report`: the top-1 table, the curves and the embedding statistics against independent numbers.

Two short real experiments on synthetic data, trained once for the module:

* ``wide``: a 256-d resnet8x4 teacher; students ``kd`` (resnet8, no ND: widths differ and there is no
  projector, so the cosine is left out) and ``kdpp`` (resnet8, KD + ND: the ND projector is used),
  each over seeds 0 and 1; the recipe claims a top-1 for ``kdpp`` and for the teacher;
* ``same``: a 64-d resnet8 teacher and one resnet8 student with ND (same width: no projector), one run.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, merge
from ndkd.cli import main
from ndkd.config import config_from_dict
from ndkd.data import load_dataset
from ndkd.models import create_model
from ndkd.pipeline import run_pipeline
from ndkd.report import embedding_statistics, run_config, write_report
from ndkd.report_plots import curve, loss_terms
from ndkd.results import find_runs, group_runs

SMALL = {
    "data": {"synthetic": {"num_train": 64, "num_test": 32, "num_classes": 4, "image_size": 8, "channels": 3}},
    "train": {"epochs": 2, "milestones": [1]},
}
CLAIMED_KDPP, CLAIMED_TEACHER = 71.5, 75.25


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and two threads on a busy 2-core machine are far slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread) -> dict:
    """Train both experiments and write one report over them (embeddings included)."""
    root = tmp_path_factory.mktemp("report_runs")
    wide = merge(TINY, {
        **SMALL, "name": "wide", "output_dir": str(root), "recipe": {"claimed_teacher_top1": CLAIMED_TEACHER},
        "students": [{"name": "kd"}, {"name": "kdpp", "distill": {"nd": {"weight": 1.0}}, "recipe": {"claimed_top1": CLAIMED_KDPP}}],
    })  # fmt: skip
    same = merge(TINY, {
        **SMALL, "name": "same", "output_dir": str(root), "teacher": {"arch": "resnet8"},
        "distill": {"method": "none", "nd": {"weight": 1.0}},
    })  # fmt: skip
    same["distill"]["options"] = {}  # method `none` takes no option
    run_pipeline(config_from_dict(wide), seeds=[0, 1], progress=False)
    run_pipeline(config_from_dict(same), progress=False)
    out = root / "report_out"
    report = write_report([root / "wide", root / "same"], out, device="cpu")
    return {"root": root, "out": out, "report": report, "text": report.read_text(encoding="utf-8")}


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_row(text: str, label: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``label``."""
    lines = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    assert len(lines) == 1, (label, lines)
    return [cell.strip() for cell in lines[0].strip("|").split(" | ")]


def summaries(group_dir: Path) -> list[dict]:
    paths = [group_dir / "summary.json"] if (group_dir / "summary.json").is_file() else sorted(group_dir.glob("seed*/summary.json"))
    return [json.loads(path.read_text()) for path in paths]


def mean_pm_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" if len(values) == 1 else f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


@pytest.mark.parametrize(
    "label, folder, claimed",
    [("wide/teacher", "wide/teacher", CLAIMED_TEACHER), ("wide/kd", "wide/kd", None), ("wide/kdpp", "wide/kdpp", CLAIMED_KDPP),
     ("same/teacher", "same/teacher", None), ("same/student", "same/student", None)],
)  # fmt: skip
def test_top1_table_is_mean_and_sample_std_of_the_summaries(runs, label, folder, claimed):
    found = summaries(runs["root"] / folder)
    row = table_row(section(runs["text"], "Test top-1"), label)
    seeds = sorted(s["seed"] for s in found)
    assert row[3:] == [
        str(len(found)), ",".join(map(str, seeds)),
        mean_pm_std([s["test_top1_last"] for s in found]), mean_pm_std([s["test_top1_best"] for s in found]),
        "-" if claimed is None else f"{claimed:.2f}",
    ]  # fmt: skip
    assert len(found) == (2 if label in ("wide/kd", "wide/kdpp") else 1)


def test_table_says_last_is_honest_and_best_selects_on_test(runs):
    text = section(runs["text"], "Test top-1")
    assert "**Last** (the weights at the end of training) is the honest number" in text
    assert "it selects on the test set" in text and "n − 1" in text
    header = table_row(text, "run")
    assert header == ["run", "arch", "method", "n", "seeds", "top-1 last", "top-1 best", "claimed"]
    assert table_row(text, "wide/kdpp")[:3] == ["wide/kdpp", "resnet8", "kd + ND(1)"]


def test_figures_are_readable_pngs(runs):
    import matplotlib.image

    for name in ("test_top1.png", "train_losses.png", "embeddings.png"):
        path = runs["out"] / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        height, width = pixels.shape[:2]
        assert 300 <= height <= 4000 and 600 <= width <= 4000, (name, pixels.shape)
        assert pixels[..., :3].std() > 0.05  # something is drawn on the white canvas
        assert f"]({name})" in runs["text"]


@pytest.mark.parametrize(
    "curves, scale",
    [([[2.0, 1.5, 1.0], [3.0, 2.0, 1.2]], "linear"), ([[2.0, 1.5, 1.0], [200.0, 400.0, 14.0]], "symlog"), ([], "linear")],
    ids=["similar runs", "one run diverges", "nothing drawn"],
)
def test_a_diverging_run_puts_the_loss_panel_on_a_symlog_axis(curves, scale):
    from matplotlib.figure import Figure

    from ndkd.report_plots import _compress_outliers

    ax = Figure().add_subplot()
    _compress_outliers(ax, [np.array(c) for c in curves])
    assert ax.get_yscale() == scale
    if scale == "symlog":  # linear up to the median of all six values, (2 + 14) / 2, logarithmic above
        assert ax.yaxis.get_transform().linthresh == pytest.approx(8.0)


def test_curves_are_mean_min_max_over_seeds_of_metrics(runs):
    groups = {g.name: g for g in group_runs(find_runs([runs["root"] / "wide"]))}
    records = [[json.loads(line) for line in (runs["root"] / f"wide/kdpp/seed{s}/metrics.jsonl").read_text().splitlines()] for s in (0, 1)]
    epochs, mean, low, high = curve(groups["kdpp"], lambda record: record["test"]["top1"])
    per_seed = np.array([[r["test"]["top1"] for r in seed] for seed in records])
    assert epochs.tolist() == [1, 2]
    np.testing.assert_allclose(mean, per_seed.mean(axis=0))
    np.testing.assert_allclose(low, per_seed.min(axis=0))
    np.testing.assert_allclose(high, per_seed.max(axis=0))
    nd = np.array([[r["train"]["nd"] for r in seed] for seed in records])
    np.testing.assert_allclose(curve(groups["kdpp"], lambda record: record["train"].get("nd"))[1], nd.mean(axis=0))
    assert len(curve(groups["kd"], lambda record: record["train"].get("nd"))[0]) == 0  # kd logs no nd term
    assert loss_terms(list(groups.values())) == ["loss", "ce", "kd", "nd"]
    assert "Terms found: `loss`, `ce`, `kd`, `nd`." in runs["text"]


class _Hooked:
    """A model whose final Linear keeps its input (the embedding) through a forward hook."""

    def __init__(self, arch: str, weights: Path) -> None:
        self.model = create_model(arch, num_classes=4, in_channels=3)
        self.model.load_state_dict(torch.load(weights, weights_only=True)["model"])
        self.model.eval()
        self.kept: list[torch.Tensor] = []
        self.model.fc.register_forward_hook(lambda module, inputs, output: self.kept.append(inputs[0]))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.kept.clear()
        self.model(images)
        return self.kept[0].flatten(1)


def independent_statistics(root: Path, experiment: str, student: str, student_arch: str, teacher_arch: str, run: str) -> dict:
    """Norms and cosines with plain torch ops: hooks on ``fc``, hand-built projector, hand normalisation."""
    config = config_from_dict(merge(TINY, SMALL))
    test_set = load_dataset(config.data, train=False)
    mean = torch.tensor(test_set.mean).view(1, -1, 1, 1)
    std = torch.tensor(test_set.std).view(1, -1, 1, 1)
    images, labels = (test_set.images.float() / 255.0 - mean) / std, test_set.labels
    run_dir = root / experiment / student / run
    s = _Hooked(student_arch, run_dir / "student.pt").embed(images)
    t = _Hooked(teacher_arch, root / experiment / "teacher" / "teacher.pt").embed(images)
    class_means = load_file(str(root / experiment / "class_means.safetensors"))["class_means"]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["student"]
    out = {"student_norms": s.norm(dim=1), "teacher_norms": t.norm(dim=1), "projected_norms": None}
    if "nd.projector.2.weight" in state:
        projector = torch.nn.Sequential(torch.nn.BatchNorm1d(s.shape[1]), torch.nn.Dropout(0.5), torch.nn.Linear(s.shape[1], t.shape[1]))
        projector.load_state_dict({k.removeprefix("nd.projector."): v for k, v in state.items() if k.startswith("nd.projector.")})
        with torch.no_grad():
            s = projector.eval()(s)
        out["projected_norms"] = s.norm(dim=1)
    centre = class_means[labels]
    cos = lambda e: (e * centre).sum(1) / (e.norm(dim=1) * centre.norm(dim=1))  # noqa: E731
    out["teacher_cosines"] = cos(t)
    out["cosines"] = cos(s) if s.shape[1] == t.shape[1] else None
    return out


@pytest.mark.parametrize(
    "label, experiment, student, arch, teacher_arch, run, projector",
    [("wide/kd", "wide", "kd", "resnet8", "resnet8x4", "seed0", False),
     ("wide/kdpp", "wide", "kdpp", "resnet8", "resnet8x4", "seed0", True),
     ("same/student", "same", "student", "resnet8", "resnet8", "", False)],
)  # fmt: skip
def test_embedding_statistics_equal_an_independent_computation(runs, label, experiment, student, arch, teacher_arch, run, projector):
    expected = independent_statistics(runs["root"], experiment, student, arch, teacher_arch, run)
    assert (expected["projected_norms"] is not None) == projector
    record = next(r for r in find_runs([runs["root"] / experiment]) if r.name == student and r.seed == 0)
    stats = embedding_statistics(record, label, device="cpu")
    assert stats.count == 32
    for name, values in expected.items():
        found = getattr(stats, name)
        if values is None:
            assert found is None, name
        else:
            torch.testing.assert_close(found, values, rtol=1e-4, atol=1e-5)
    cells = table_row(section(runs["text"], "Embeddings"), label)
    assert cells[1:3] == ["0", "32"]
    columns = ("student_norms", "projected_norms", "cosines", "teacher_norms", "teacher_cosines")  # order of the table
    for cell, values, digits in zip(cells[3:], [expected[k] for k in columns], [3, 3, 4, 3, 4]):
        if values is None:
            assert cell == "-"
        else:
            assert abs(float(cell) - values.double().mean().item()) <= 0.5 * 10**-digits + 1e-6, (label, cell)


def test_cosine_left_out_without_projector_says_why(runs):
    text = section(runs["text"], "Embeddings")
    assert ("- `wide/kd`: cosine left out: the student's embedding is 64-d and the teacher's 256-d, and the run has no ND "
            "projector (ND is off), so the student's cosine to the teacher's class-means is undefined.") in text  # fmt: skip
    assert text.count("cosine left out") == 1
    assert "wide/teacher" not in text  # teachers are the reference of each row, not rows of their own


def test_no_embeddings_cli_default_out_prints_report_path(runs, capsys):
    target = runs["root"] / "same"
    assert main(["report", str(target), "--no-embeddings"]) == 0
    report = target / "report" / "report.md"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(report)
    text = report.read_text(encoding="utf-8")
    assert "Left out (`--no-embeddings`)." in text and not (target / "report" / "embeddings.png").exists()
    assert table_row(text, "student")[5] == mean_pm_std([s["test_top1_last"] for s in summaries(target / "student")])
    assert (target / "report" / "test_top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_moved_runs_find_their_teacher_next_to_them(runs, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(runs["root"] / "same", moved / "same")
    record = next(r for r in find_runs([moved / "same"]) if r.role == "student")
    assert record.config["output_dir"] == str(runs["root"])  # the resolved config still names the old place
    assert run_config(record).output_dir == str(moved.resolve())
    (runs["root"] / "same" / "teacher" / "teacher.pt").rename(runs["root"] / "same" / "teacher.pt.away")
    try:
        stats = embedding_statistics(record, device="cpu")
    finally:
        (runs["root"] / "same" / "teacher.pt.away").rename(runs["root"] / "same" / "teacher" / "teacher.pt")
    assert stats.cosines is not None and stats.count == 32


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_missing_directory_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["report", str(missing)]) == 2
    assert one_line_error(capsys) == f"ndkd: error: run directory {str(missing)!r} does not exist"


def test_folder_without_finished_run_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "half" / "kd").mkdir(parents=True)
    (tmp_path / "half" / "kd" / "summary.json").write_text(json.dumps({"finished": False}))
    assert main(["report", str(tmp_path / "half")]) == 2
    assert one_line_error(capsys) == (
        f"ndkd: error: no finished run in {str(tmp_path / 'half')!r}; a run directory holds a summary.json "
        "written at the end of `ndkd run`"
    )
    assert not (tmp_path / "half" / "report").exists()


def test_report_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "ndkd report runs/" in out and "--no-embeddings" in out and "--out DIR" in out
    assert re.search(r"RUN_DIR \[RUN_DIR \.\.\.\]", out)
