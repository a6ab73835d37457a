"""The one training loop: SGD + step schedule, per-term losses, evaluation, checkpoints, exact resume.

Used for teachers (method ``none``) and students alike, in one process or under torchrun (DDP).
Per epoch the main process writes ``checkpoints/last.pt`` (atomically; trainable weights, optimiser,
scheduler, grad scaler, epoch, best metric, resolved config), ``checkpoints/best.pt`` when the test
top-1 improves, and one line of ``metrics.jsonl``. Random layers draw from a generator reseeded at
every epoch from (seed, epoch, rank) and data order from (seed, epoch), so a run restarted in the same
directory continues from ``last.pt`` exactly as if never stopped (bit-identical on the CPU), with any
number of processes. At the end the trained network alone is exported as ``<role>.pt``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ndkd.config import SpeedConfig, TrainConfig, dump_config
from ndkd.data.loader import InMemoryLoader
from ndkd.distillers.base import Distiller
from ndkd.engine.acceleration import apply_speed_switches, autocast, grad_scaler
from ndkd.engine.checkpoint import atomic_save, atomic_write_text, load_checkpoint
from ndkd.engine.evaluate import evaluate
from ndkd.engine.runtime import Runtime, epoch_seed
from ndkd.errors import ConfigError, TrainingError
from ndkd.models.weights import save_weights

logger = logging.getLogger("ndkd")
EpochCallback = Callable[[int, dict], None]


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


def training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    epoch: int,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One optimisation step of a distiller (or its DDP wrapper): forward, sum of terms, backward, step.

    Returns the student logits, the loss terms and their sum (device tensors: nothing is synced).
    ``scale`` multiplies the objective before backward (DDP shard weighting).
    """
    with autocast(images.device, precision):
        logits, losses = model(images, labels, epoch)
    total = torch.stack([value.float() for value in losses.values()]).sum()
    objective = total * scale if scale != 1.0 else total
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        objective.backward()
        optimizer.step()
    else:
        scaler.scale(objective).backward()
        scaler.step(optimizer)
        scaler.update()
    return logits, losses, total


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
        *,
        seed: int = 0,
        speed: SpeedConfig | None = None,
        sync_bn: bool = False,
    ) -> None:
        self.speed = speed or SpeedConfig()
        self.distiller = distiller.to(runtime.device)
        apply_speed_switches(self.distiller, self.speed, runtime.device)
        self.train_loader, self.test_loader = train_loader, test_loader
        self.config, self.run, self.runtime, self.seed = config, run, runtime, seed
        self.progress = progress and runtime.is_main
        self.on_epoch_end = on_epoch_end
        if runtime.distributed and train_loader.batch_size < 2 * runtime.world_size:
            raise ConfigError(
                f"data.batch_size {train_loader.batch_size} is the global batch and must give every one of the "
                f"{runtime.world_size} processes at least 2 samples"
            )
        self.model: torch.nn.Module = self.distiller
        if runtime.distributed:
            if sync_bn:
                if runtime.device.type != "cuda":
                    raise ConfigError("sync_bn needs GPUs (torch's SyncBatchNorm does not run on the CPU)")
                self.distiller.student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.distiller.student)
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.distiller, device_ids=device_ids)
        self.optimizer = torch.optim.SGD(
            distiller.trainable_parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=config.milestones, gamma=config.lr_decay)
        self.scaler = grad_scaler(runtime.device, self.speed.precision)
        self.checkpoint_dir = run.run_dir / "checkpoints"
        self.metrics_path = run.run_dir / "metrics.jsonl"
        self.start_epoch = 0
        self.best = {"epoch": 0, "top1": -1.0}

    # -- checkpoints ------------------------------------------------------------------------------------

    def _state(self, epoch: int) -> dict:
        return {
            "format": 1,
            "epoch": epoch,
            "student": self.distiller.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
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
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best = dict(state["best"])
        self.start_epoch = int(state["epoch"])
        if self.runtime.is_main:
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

    def _reduced_means(self, sums: dict[str, torch.Tensor], seen: torch.Tensor) -> dict[str, float]:
        """Per-sample means of the accumulated sums over all processes (one host sync)."""
        names = list(sums)
        packed = self.runtime.all_reduce_sum(torch.stack([sums[name] for name in names] + [seen.to(sums[names[0]])]))
        values = (packed[:-1] / packed[-1]).tolist()
        return dict(zip(names, values))

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.distiller.train()
        self.train_loader.set_epoch(epoch)
        torch.manual_seed(epoch_seed(self.seed, epoch, self.runtime.rank))
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), device=self.runtime.device)
        bounds = self.train_loader.batch_bounds()
        world = self.runtime.world_size
        started = time.perf_counter()
        bar = tqdm(
            # disable=None: no bar when stderr is not a terminal (log files get the per-epoch lines)
            total=len(self.train_loader.dataset), desc=f"{self.run.role} epoch {epoch + 1}/{self.config.epochs}",
            unit="img", unit_scale=True, disable=None if self.progress else True, leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for step, (images, labels) in enumerate(self.train_loader):
            batch = labels.shape[0]
            # DDP averages gradients over processes; weighting by the local share makes the average equal
            # the gradient of the global-batch mean even when the last batch splits unevenly
            global_batch = bounds[step][1] - bounds[step][0]
            scale = batch * world / global_batch if world > 1 else 1.0
            logits, losses, total = training_step(
                self.model, self.optimizer, images, labels, epoch, self.speed.precision, self.scaler, scale
            )
            for name, value in (("loss", total), *losses.items()):
                weighted = value.detach().float() * batch
                sums[name] = sums[name] + weighted if name in sums else weighted
            sums["top1"] = sums.get("top1", 0) + (logits.detach().argmax(dim=1) == labels).sum() * 100.0
            seen += batch
            bar.update(global_batch)
            if (step + 1) % self.config.log_interval == 0:  # the only host sync of the loop
                running = self._reduced_means(sums, seen)
                self._check_finite(running, epoch)
                bar.set_postfix({k: f"{v:.3f}" for k, v in running.items() if k != "top1"}, refresh=False)
        bar.close()
        elapsed = time.perf_counter() - started
        stats = self._reduced_means(sums, seen)
        self._check_finite(stats, epoch)
        return {**stats, "_seconds": elapsed, "_images": len(self.train_loader.dataset)}

    def _check_finite(self, losses: dict[str, float], epoch: int) -> None:
        if all(value == value and abs(value) != float("inf") for value in losses.values()):
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in losses.items() if k != "top1")
        last = self.checkpoint_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise TrainingError(
            f"the loss became NaN or infinite in epoch {epoch + 1} ({terms}); {kept}. "
            "Lower train.lr or the loss weights and start again with --restart"
        )

    def fit(self) -> dict:
        """Train to ``config.epochs`` (resuming if a checkpoint exists) and return the summary."""
        run_dir = self.run.run_dir
        handler, level = None, logger.level
        if self.runtime.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
            if logger.getEffectiveLevel() > logging.INFO:  # log.txt always gets the epoch lines
                logger.setLevel(logging.INFO)
        try:
            if self.runtime.is_main:
                atomic_write_text(dump_config(self.run.config), run_dir / "config.yaml")
            self.runtime.barrier()
            self._resume()
            if self.start_epoch == 0:
                processes = f" on {self.runtime.world_size} processes" if self.runtime.distributed else ""
                logger.info("training %s (%s) in %s%s: %s", self.run.role, self.run.arch, run_dir, processes, self.distiller.describe())
            for epoch in range(self.start_epoch, self.config.epochs):
                self._run_epoch(epoch)
            summary = self._finish()
            self.runtime.barrier()  # the next step of a pipeline may read what the main process wrote
            return summary
        finally:
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()
                logger.setLevel(level)

    def _run_epoch(self, epoch: int) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        train = self._train_epoch(epoch)
        self.scheduler.step()
        test = evaluate(self.distiller.student, self.test_loader, self.runtime, self.speed.precision)
        seconds, images = train.pop("_seconds"), train.pop("_images")
        top1 = train.pop("top1")
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train": {**train, "top1": top1},
            "test": test,
            "time": {"train_s": round(seconds, 3), "images_per_s": round(images / seconds, 1)},
        }
        improved = test["top1"] > self.best["top1"]
        if improved:
            self.best = {"epoch": epoch + 1, "top1": test["top1"]}
        if self.runtime.is_main:
            state = self._state(epoch + 1)
            atomic_save(state, self.checkpoint_dir / "last.pt")
            if improved:
                atomic_save(state, self.checkpoint_dir / "best.pt")
            with open(self.metrics_path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
            terms = " ".join(f"{k} {v:.4f}" for k, v in train.items())
            logger.info(
                "%s epoch %d/%d  lr %.4g  %s  train top1 %.2f  test top1 %.2f top5 %.2f  (%.0f img/s)",
                self.run.role, epoch + 1, self.config.epochs, lr, terms, top1, test["top1"], test["top5"],
                record["time"]["images_per_s"],
            )  # fmt: skip
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch + 1, record)

    def _finish(self) -> dict:
        self.runtime.barrier()  # every process reads the metrics the main process has written
        run_dir = self.run.run_dir
        weights_name = f"{self.run.role}.pt"
        if not self.metrics_path.is_file():
            raise TrainingError(f"{self.metrics_path} is missing: the run directory was changed while training")
        records = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        last = records[-1]["test"]
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
        if self.runtime.is_main:
            save_weights(
                self.distiller.student, run_dir / weights_name,
                arch=self.run.arch, num_classes=self.run.num_classes, in_channels=self.run.in_channels,
            )  # fmt: skip
            atomic_write_text(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
        return summary
