"""The `ndkd` command: help with examples, one-line errors with non-zero exits, the chained pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from ndkd.centers import save_class_means
from ndkd.cli import main
from ndkd.models import create_model

COMMANDS = ["train-teacher", "centers", "distill", "eval", "run"]


def write_config(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("ndkd: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_console_script_help_lists_commands_with_examples():
    result = subprocess.run([sys.executable, "-m", "ndkd", "--help"], capture_output=True, text=True, check=True)
    for command in COMMANDS:
        assert command in result.stdout
    for command in COMMANDS:
        result = subprocess.run([sys.executable, "-m", "ndkd", command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0
        assert "examples:" in result.stdout and f"ndkd {command} " in result.stdout
        assert "KEY=VALUE" in result.stdout


def test_bad_config_key_exits_2_with_the_key(tmp_path, tiny_dict, capsys):
    tiny_dict["train"]["epoch"] = 3
    assert main(["distill", write_config(tmp_path, tiny_dict)]) == 2
    assert "unknown key 'train.epoch'. Did you mean 'epochs'?" in one_line_error(capsys)


def test_missing_dataset_is_one_line_and_non_zero(tmp_path, tiny_dict, capsys):
    tiny_dict["data"]["dataset"] = "fashion_mnist"
    tiny_dict["data"]["root"] = str(tmp_path / "no-data-here")
    assert main(["train-teacher", write_config(tmp_path, tiny_dict), "--no-progress"]) == 1
    line = one_line_error(capsys)
    assert "Fashion-MNIST train files not found" in line and "dataset-fashion-mnist" in line


def test_class_means_of_wrong_shape_is_one_line_and_non_zero(tmp_path, tiny_dict, random_teacher, capsys):
    save_class_means(tmp_path / "wrong.safetensors", torch.rand(4, 64))  # teacher resnet8x4 has 256-d embeddings
    tiny_dict["teacher"]["checkpoint"] = str(random_teacher)
    tiny_dict["distill"]["nd"] = {"weight": 1.0, "class_means": str(tmp_path / "wrong.safetensors")}
    assert main(["distill", write_config(tmp_path, tiny_dict), "--no-progress"]) == 1
    line = one_line_error(capsys)
    assert "does not fit this teacher and dataset: width 64 but the teacher's embedding has width 256" in line


def test_teacher_checkpoint_with_missing_keys_is_one_line_and_non_zero(tmp_path, tiny_dict, capsys):
    state = create_model("resnet8x4", num_classes=4).state_dict()
    del state["layer3.0.conv2.weight"]
    torch.save({"model": state}, tmp_path / "broken.pt")
    tiny_dict["teacher"]["checkpoint"] = str(tmp_path / "broken.pt")
    assert main(["distill", write_config(tmp_path, tiny_dict), "--no-progress"]) == 1
    line = one_line_error(capsys)
    assert "does not fit the resnet8x4 model: missing keys: layer3.0.conv2.weight" in line


def test_missing_teacher_weights_say_to_train_the_teacher(tmp_path, tiny_dict, capsys):
    assert main(["centers", write_config(tmp_path, tiny_dict)]) == 2
    assert "run `ndkd train-teacher CONFIG` first" in one_line_error(capsys)


def test_run_chains_teacher_centers_students_then_skips_finished_steps(tmp_path, tiny_dict, capsys):
    tiny_dict["students"] = [
        {"name": "ce", "distill": {"method": "none"}},
        {"name": "kd"},
        {"name": "kdpp", "distill": {"nd": {"weight": 2.0}}},
    ]
    config = write_config(tmp_path, tiny_dict)
    assert main(["run", config, "--no-progress"]) == 0
    out = capsys.readouterr()
    rows = [line.split() for line in out.out.strip().splitlines()[2:]]
    assert [row[0] for row in rows] == ["teacher", "ce", "kd", "kdpp"]
    root = tmp_path / "runs" / "tiny"
    for name in ("teacher", "ce", "kd", "kdpp"):
        summary = json.loads((root / name / "summary.json").read_text())
        assert summary["finished"] and f"{summary['test_top1_last']:.2f}" in out.out
        assert (root / name / "metrics.jsonl").read_text().count("\n") == (1 if name == "teacher" else 3)
    assert (root / "class_means.safetensors").is_file()
    kdpp_terms = json.loads((root / "kdpp" / "metrics.jsonl").read_text().splitlines()[-1])["train"]
    assert set(kdpp_terms) == {"loss", "ce", "kd", "nd", "top1"}

    assert main(["run", config, "--no-progress"]) == 0
    again = capsys.readouterr()
    assert again.out == out.out
    assert again.err.count("skipping") == 5  # teacher, class-means, three students

    assert main(["eval", str(root / "kdpp"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["top1"] == pytest.approx(json.loads((root / "kdpp" / "summary.json").read_text())["test_top1_last"])
