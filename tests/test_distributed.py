"""DDP on the CPU (gloo, 2 processes under torchrun): same weights and class-means as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ndkd.data import InMemoryLoader, make_synthetic
from ndkd.models import create_model
from ndkd.models.weights import save_weights

WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_worker(args: list[str], processes: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if processes == 1:
        command = [sys.executable, WORKER, *args]
    else:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), WORKER, *args,
        ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def write_config(tmp_path: Path, output: str, teacher: Path, **extra) -> Path:
    config = {
        "name": "ddp",
        "output_dir": str(tmp_path / output),
        "device": "cpu",
        "data": {
            "dataset": "synthetic", "batch_size": 24, "eval_batch_size": 40, "crop_padding": 2,
            "synthetic": {"num_train": 120, "num_test": 60, "num_classes": 4, "image_size": 12, "channels": 3},
        },
        "teacher": {"arch": "test_convnet_nobn", "checkpoint": str(teacher)},
        "student": {"arch": "test_convnet_nobn"},
        "train": {"epochs": 2, "lr": 0.1, "momentum": 0.9, "nesterov": True, "milestones": [1], "log_interval": 2},
        "distill": {"method": "kd", "options": {"temperature": 2.0}},
        **extra,
    }  # fmt: skip
    path = tmp_path / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def nobn_teacher(tmp_path) -> Path:
    sys.path.insert(0, str(Path(WORKER).parent))
    import ddp_worker  # noqa: F401  (registers test_convnet_nobn in this process too)

    torch.manual_seed(7)
    path = tmp_path / "teacher.pt"
    save_weights(create_model("test_convnet_nobn", num_classes=4), path)
    return path


def student_state(tmp_path: Path, output: str) -> dict:
    return torch.load(tmp_path / output / "ddp" / "student" / "student.pt", weights_only=True)["model"]


def test_two_process_ddp_matches_one_process_and_resumes_with_another_world_size(tmp_path, nobn_teacher):
    single = write_config(tmp_path, "single", nobn_teacher)
    double = write_config(tmp_path, "double", nobn_teacher)
    resumed = write_config(tmp_path, "resumed", nobn_teacher)
    result = run_worker(["distill", str(single)], processes=1)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_worker(["distill", str(double)], processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    # 120 samples / global batch 24 = 5 steps per epoch; the 2 processes see 12 samples each per step
    reference = student_state(tmp_path, "single")
    for key, value in student_state(tmp_path, "double").items():
        torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-5, msg=key)
    metrics = {}
    for output in ("single", "double"):
        lines = (tmp_path / output / "ddp" / "student" / "metrics.jsonl").read_text().splitlines()
        metrics[output] = [json.loads(line) for line in lines]
    for one, two in zip(metrics["single"], metrics["double"]):  # metrics are reduced over both processes
        assert one["test"]["top1"] == two["test"]["top1"]
        assert one["train"]["loss"] == pytest.approx(two["train"]["loss"], rel=1e-5)
        assert one["train"]["top1"] == pytest.approx(two["train"]["top1"])

    # stop after epoch 1 on 2 processes, resume on 1: the same end as the uninterrupted run
    result = run_worker(["distill", str(resumed), "--stop-after", "1"], processes=2)
    assert result.returncode != 0  # the worker exits with 3 after epoch 1
    run_dir = tmp_path / "resumed" / "ddp" / "student"
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert not (run_dir / "student.pt").exists()
    result = run_worker(["distill", str(resumed)], processes=1)
    assert result.returncode == 0, result.stderr[-3000:]
    for key, value in student_state(tmp_path, "resumed").items():
        torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-5, msg=key)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_class_means_from_two_processes_equal_one_process(tmp_path):
    torch.manual_seed(3)
    teacher = tmp_path / "resnet8.pt"
    save_weights(create_model("resnet8", num_classes=4), teacher)
    paths = {}
    for processes in (1, 2):
        config = write_config(tmp_path, f"centers{processes}", teacher, centers={"batch_size": 32})
        result = run_worker(["centers", str(config), "teacher.arch=resnet8", "data.synthetic.num_train=100"], processes)
        assert result.returncode == 0, result.stderr[-3000:]
        paths[processes] = tmp_path / f"centers{processes}" / "ddp" / "class_means.safetensors"
    one, two = load_file(str(paths[1]))["class_means"], load_file(str(paths[2]))["class_means"]
    assert one.shape == (4, 64)
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)


def test_shards_of_a_global_batch_are_the_single_process_batch():
    dataset = make_synthetic(num_samples=54, num_classes=5, image_size=8, channels=3, seed=0, train=True)
    whole = InMemoryLoader(dataset, batch_size=16, train=True, seed=2, crop_padding=2)
    shards = [InMemoryLoader(dataset, batch_size=16, train=True, seed=2, crop_padding=2, rank=r, world_size=3) for r in range(3)]
    expected = [(0, 16), (16, 32), (32, 48), (48, 54)]
    assert whole.batch_bounds() == expected and all(s.batch_bounds() == expected for s in shards)
    for batches in zip(whole, *shards):
        (images, labels), parts = batches[0], batches[1:]
        assert torch.equal(torch.cat([p[0] for p in parts]), images)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)
        sizes = [p[1].numel() for p in parts]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2
    # a trailing batch that cannot give each of 3 processes 2 samples joins the previous batch
    small = make_synthetic(num_samples=52, num_classes=4, image_size=8, channels=3, seed=0, train=True)
    assert InMemoryLoader(small, batch_size=16, train=True, world_size=3).batch_bounds()[-1] == (32, 52)
    assert InMemoryLoader(small, batch_size=16, train=True).batch_bounds()[-1] == (48, 52)
