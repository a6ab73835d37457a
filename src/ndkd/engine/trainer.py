"""The one training loop: SGD + step schedule, per-term losses, evaluation, checkpoints, exact resume.

Used for teachers (method ``none``) and students alike. Per epoch it writes ``checkpoints/last.pt``
(atomically; everything needed to resume: trainable weights, optimiser, scheduler, RNG states, epoch,
best metric, resolved config), ``checkpoints/best.pt`` when the test top-1 improves, and one line of
``metrics.jsonl``. A run restarted in the same directory continues from ``last.pt`` and, on the CPU,
ends with exactly the weights and metrics of an uninterrupted run. At the end the trained network
alone is exported as ``<role>.pt`` and ``summary.json`` is written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ndkd.config import TrainConfig, dump_config
from ndkd.data.loader import InMemoryLoader
from ndkd.distillers.base import Distiller
from ndkd.engine.checkpoint import atomic_save, atomic_write_text, load_checkpoint
from ndkd.engine.runtime import Runtime
from ndkd.errors import ConfigError, TrainingError
from ndkd.models.weights import save_weights

logger = logging.getLogger("ndkd")
EpochCallback = Callable[[int, dict], None]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: InMemoryLoader) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader`` (eval mode)."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = None
    count = 0
    for images, labels in loader:
        logits = model(images).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(labels[:, None])
        batch = (hits[:, 0].sum(), hits.any(dim=1).sum(), F.cross_entropy(logits, labels, reduction="sum"))
        if correct1 is None:
            correct1, correct5, loss_sum = batch
        else:
            correct1, correct5, loss_sum = correct1 + batch[0], correct5 + batch[1], loss_sum + batch[2]
        count += labels.shape[0]
    model.train(was_training)
    if count == 0:
        raise TrainingError("the evaluation set is empty")
    return {
        "top1": 100.0 * correct1.item() / count,
        "top5": 100.0 * correct5.item() / count,
        "loss": loss_sum.item() / count,
    }


@dataclass
class RunInfo:
    """What identifies a run: its directory, role, the resolved config and its fingerprint."""

    run_dir: Path
    role: str  # "teacher" or "student": names the exported weights file
    arch: str
    num_classes: int
    in_channels: int
    config: dict
    fingerprint: str
    extra_summary: dict = field(default_factory=dict)


class Trainer:
    """Train ``distiller`` with ``config`` on ``train_loader``, evaluating on ``test_loader`` each epoch."""

    def __init__(
        self,
        distiller: Distiller,
        train_loader: InMemoryLoader,
        test_loader: InMemoryLoader,
        config: TrainConfig,
        run: RunInfo,
        runtime: Runtime,
        progress: bool = True,
        on_epoch_end: EpochCallback | None = None,
    ) -> None:
        self.distiller = distiller.to(runtime.device)
        self.train_loader, self.test_loader = train_loader, test_loader
        self.config, self.run, self.runtime = config, run, runtime
        self.progress = progress and runtime.is_main
        self.on_epoch_end = on_epoch_end
        self.optimizer = torch.optim.SGD(
            distiller.trainable_parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=config.milestones, gamma=config.lr_decay)
        self.checkpoint_dir = run.run_dir / "checkpoints"
        self.metrics_path = run.run_dir / "metrics.jsonl"
        self.start_epoch = 0
        self.best = {"epoch": 0, "top1": -1.0}

    # -- checkpoints ------------------------------------------------------------------------------------

    def _state(self, epoch: int) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": 1,
            "epoch": epoch,
            "student": self.distiller.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "best": dict(self.best),
            "config": self.run.config,
            "fingerprint": self.run.fingerprint,
        }

    def _resume(self) -> None:
        path = self.checkpoint_dir / "last.pt"
        if not path.is_file():
            return
        state = load_checkpoint(path)
        if state.get("fingerprint") != self.run.fingerprint:
            raise ConfigError(
                f"{self.run.run_dir} holds a run with a different config; choose another name or output_dir, "
                "or pass --restart to move the old run aside and start again"
            )
        self.distiller.load_trainable_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.best = dict(state["best"])
        self.start_epoch = int(state["epoch"])
        self._truncate_metrics(self.start_epoch)
        logger.info("resuming %s after epoch %d", self.run.run_dir, self.start_epoch)

    def _truncate_metrics(self, completed: int) -> None:
        """Keep only metric lines of epochs the checkpoint includes (a crash may have left a later one)."""
        if not self.metrics_path.is_file():
            return
        lines = [line for line in self.metrics_path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] <= completed]
        atomic_write_text("".join(line + "\n" for line in kept), self.metrics_path)

    # -- training -----------------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.distiller.train()
        self.train_loader.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=self.runtime.device)
        seen = 0
        started = time.perf_counter()
        bar = tqdm(
            # disable=None: no bar when stderr is not a terminal (log files get the per-epoch lines)
            total=len(self.train_loader.dataset), desc=f"{self.run.role} epoch {epoch + 1}/{self.config.epochs}",
            unit="img", unit_scale=True, disable=None if self.progress else True, leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for step, (images, labels) in enumerate(self.train_loader, start=1):
            logits, losses = self.distiller.forward_train(images, labels, epoch)
            total = torch.stack(list(losses.values())).sum()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            batch = labels.shape[0]
            seen += batch
            for name, value in (("loss", total), *losses.items()):
                weighted = value.detach() * batch
                sums[name] = sums[name] + weighted if name in sums else weighted
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            bar.update(batch)
            if step % self.config.log_interval == 0:  # the only host sync of the loop
                running = {name: value.item() / seen for name, value in sums.items()}
                self._check_finite(running, epoch)
                bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
        bar.close()
        elapsed = time.perf_counter() - started
        stats = {name: value.item() / seen for name, value in sums.items()}
        self._check_finite(stats, epoch)
        stats["top1"] = 100.0 * correct.item() / seen
        return {**stats, "_seconds": elapsed, "_images": seen}

    def _check_finite(self, losses: dict[str, float], epoch: int) -> None:
        if all(value == value and abs(value) != float("inf") for value in losses.values()):
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        last = self.checkpoint_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise TrainingError(
            f"the loss became NaN or infinite in epoch {epoch + 1} ({terms}); {kept}. "
            "Lower train.lr or the loss weights and start again with --restart"
        )

    def fit(self) -> dict:
        """Train to ``config.epochs`` (resuming if a checkpoint exists) and return the summary."""
        run_dir = self.run.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        try:
            atomic_write_text(dump_config(self.run.config), run_dir / "config.yaml")
            self._resume()
            if self.start_epoch == 0:
                logger.info("training %s (%s) in %s: %s", self.run.role, self.run.arch, run_dir, self.distiller.describe())
            for epoch in range(self.start_epoch, self.config.epochs):
                self._run_epoch(epoch)
            return self._finish()
        finally:
            logger.removeHandler(handler)
            handler.close()

    def _run_epoch(self, epoch: int) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        train = self._train_epoch(epoch)
        self.scheduler.step()
        test = evaluate(self.distiller.student, self.test_loader)
        seconds, images = train.pop("_seconds"), train.pop("_images")
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train": train,
            "test": test,
            "time": {"train_s": round(seconds, 3), "images_per_s": round(images / seconds, 1)},
        }
        improved = test["top1"] > self.best["top1"]
        if improved:
            self.best = {"epoch": epoch + 1, "top1": test["top1"]}
        state = self._state(epoch + 1)
        atomic_save(state, self.checkpoint_dir / "last.pt")
        if improved:
            atomic_save(state, self.checkpoint_dir / "best.pt")
        with open(self.metrics_path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        terms = " ".join(f"{k} {v:.4f}" for k, v in train.items() if k != "top1")
        logger.info(
            "%s epoch %d/%d  lr %.4g  %s  train top1 %.2f  test top1 %.2f top5 %.2f  (%.0f img/s)",
            self.run.role, epoch + 1, self.config.epochs, lr, terms, train["top1"], test["top1"], test["top5"],
            record["time"]["images_per_s"],
        )  # fmt: skip
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch + 1, record)

    def _finish(self) -> dict:
        run_dir = self.run.run_dir
        weights_name = f"{self.run.role}.pt"
        save_weights(
            self.distiller.student, run_dir / weights_name,
            arch=self.run.arch, num_classes=self.run.num_classes, in_channels=self.run.in_channels,
        )  # fmt: skip
        records = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        last = records[-1]["test"] if records else evaluate(self.distiller.student, self.test_loader)
        summary = {
            "role": self.run.role,
            "arch": self.run.arch,
            "epochs": self.config.epochs,
            "finished": True,
            "test_top1_last": last["top1"],
            "test_top5_last": last["top5"],
            "test_top1_best": self.best["top1"],
            "best_epoch": self.best["epoch"],
            "weights": weights_name,
            "fingerprint": self.run.fingerprint,
            **self.run.extra_summary,
        }
        atomic_write_text(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
        return summary

