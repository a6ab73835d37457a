"""Multi-seed groups: `--seeds` trains each student once per seed with one teacher; groups report mean ± std."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
import yaml

from ndkd import pipeline
from ndkd.cli import main
from ndkd.config import DataConfig, config_from_dict
from ndkd.data import load_dataset
from ndkd.results import find_runs, group_runs, mean_std

STUDENTS = [{"name": "kd"}, {"name": "kdpp", "distill": {"nd": {"weight": 2.0}}, "recipe": {"claimed_top1": 55.5}}]


def student_weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "student.pt", weights_only=True)["model"]


def test_run_with_seeds_trains_one_teacher_and_every_student_per_seed(tmp_path, tiny_dict, capsys):
    tiny_dict["students"] = STUDENTS
    tiny_dict["train"]["epochs"] = 2
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert main(["run", str(path), "--seeds", "0,1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in root.iterdir()) == ["class_means.safetensors", "kd", "kdpp", "teacher"]
    assert json.loads((root / "teacher" / "summary.json").read_text())["seed"] == 0
    for name in ("kd", "kdpp"):
        assert sorted(p.name for p in (root / name).iterdir()) == ["seed0", "seed1"]
        summaries = [json.loads((root / name / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        assert [s["seed"] for s in summaries] == [0, 1]
        assert [yaml.safe_load((root / name / f"seed{s}" / "config.yaml").read_text())["seed"] for s in (0, 1)] == [0, 1]
        # the group line: mean and sample standard deviation of the two last-epoch top-1
        last = [s["test_top1_last"] for s in summaries]
        expected = f"{statistics.mean(last):.2f} ± {statistics.stdev(last):.2f}"
        group_line = [line for line in out.splitlines() if line.startswith(name + " ") and "0,1" in line]
        assert len(group_line) == 1 and expected in group_line[0], out
    assert "55.50" in [line for line in out.splitlines() if line.startswith("kdpp ") and "0,1" in line][0]
    # different seeds train differently
    first, second = (student_weights(root / "kd" / f"seed{s}") for s in (0, 1))
    assert any(not torch.equal(first[key], second[key]) for key in first)

    # a second call trains nothing: the teacher, the class-means and all four runs are finished
    assert main(["run", str(path), "--seeds", "0,1", "--no-progress"]) == 0
    assert capsys.readouterr().err.count("skipping") == 6


def test_a_seed_of_a_group_equals_a_single_run_with_that_seed(tmp_path, tiny_dict):
    """`--seeds` only replaces `seed`: the group's seed-1 run is the plain run of the config with seed 1."""
    tiny_dict["students"] = STUDENTS[1:]
    config = config_from_dict(tiny_dict)
    pipeline.run_pipeline(config, seeds=[1], progress=False)
    group_root = tmp_path / "runs" / "tiny"
    single = dict(tiny_dict, seed=1, name="single", output_dir=str(tmp_path / "other"))
    single["teacher"] = {**tiny_dict["teacher"], "checkpoint": str(group_root / "teacher" / "teacher.pt")}
    single["distill"] = {**tiny_dict["distill"], "nd": {"class_means": str(group_root / "class_means.safetensors")}}
    summary = pipeline.distill(config_from_dict(single), "kdpp", progress=False)
    group = json.loads((group_root / "kdpp" / "seed1" / "summary.json").read_text())
    assert summary["test_top1_last"] == group["test_top1_last"]
    ours, theirs = student_weights(group_root / "kdpp" / "seed1"), student_weights(tmp_path / "other" / "single" / "kdpp")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("text", ["", "a,b", "1,1", "-1", "0,,x"])
def test_bad_seed_lists_are_refused_with_exit_2(tmp_path, tiny_dict, capsys, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path), "--seeds", text])
    assert exited.value.code == 2
    assert f"argument --seeds: {text!r} is not a list of distinct seeds >= 0 separated by commas" in capsys.readouterr().err


def test_data_seed_fixes_the_images_whatever_the_run_seed():
    synthetic = {"num_train": 40, "num_test": 8, "num_classes": 4, "image_size": 8, "channels": 1}
    config = config_from_dict({"data": {"dataset": "synthetic", "train_subset": 20, "synthetic": synthetic}})
    other_run_seed = config_from_dict({"seed": 7, "data": {"dataset": "synthetic", "train_subset": 20, "synthetic": synthetic}})
    a, b = load_dataset(config.data, train=True), load_dataset(other_run_seed.data, train=True)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = load_dataset(DataConfig(dataset="synthetic", train_subset=20, seed=1, synthetic=config.data.synthetic), train=True)
    assert not torch.equal(a.images, c.images)


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([70.0, 72.0, 74.0]) == (72.0, 2.0)
    assert mean_std([71.5]) == (71.5, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_find_runs_leaves_out_unfinished_and_moved_aside_runs(tmp_path, tiny_dict):
    tiny_dict["students"] = STUDENTS[:1]
    config = config_from_dict(tiny_dict)
    pipeline.run_pipeline(config, seeds=[0], progress=False)
    root = tmp_path / "runs" / "tiny"
    (root / "kd" / "seed0").rename(root / "kd" / "seed0.old-20260101-000000")
    unfinished = root / "kd" / "seed3"
    unfinished.mkdir()
    (unfinished / "summary.json").write_text(json.dumps({"finished": False}))
    records = find_runs([root])
    assert [(r.name, r.seed) for r in records] == [("teacher", 0)]
    groups = group_runs(records)
    assert [(g.experiment, g.name, g.method) for g in groups] == [("tiny", "teacher", "-")]


def test_command_line_overrides_reach_students_that_set_the_key_themselves(tmp_path, tiny_dict):
    from ndkd.config import load_config
    from ndkd.errors import ConfigError

    tiny_dict["students"] = [{"name": "kd"}, {"name": "kdpp", "distill": {"nd": {"weight": 2.0}, "weight": 3.0}}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    config = load_config(path, ["distill.nd.weight=0.5", "train.epochs=1"])
    for name in ("kd", "kdpp"):
        student = pipeline.student_config(config, name)
        assert (student.distill.nd.weight, student.train.epochs) == (0.5, 1)
    assert pipeline.student_config(config, "kdpp").distill.weight == 3.0  # what the override does not name stays
    assert pipeline.student_config(load_config(path), "kdpp").distill.nd.weight == 2.0
    with pytest.raises(ConfigError, match=r"override 'distill.options.tau=2': unknown key 'distill.options.tau'"):
        load_config(path, ["distill.options.tau=2"])
