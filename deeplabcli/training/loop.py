"""The training loop behind ``deeplab train`` and ``deeplab finetune`` (paper Sec. 4.1).

>>> from deeplabcli.config import TrainConfig
>>> result = train(TrainConfig(data_root="VOCdevkit", out="runs/r101"))  # doctest: +SKIP

A run is exactly reproducible and resumable: the data order and every augmentation are pure
functions of (seed, position in the sample stream), the remaining randomness (dropout) is saved
per process, and ``train_state.pt`` is written atomically; ``--resume`` continues with
bit-identical weights. SIGINT/SIGTERM finish the current step, save, and raise
:class:`~deeplabcli.errors.Interrupted` (exit 130 / 143).

Under ``torchrun`` each process takes ``batch_size / world_size`` images of every iteration,
the model is wrapped in DDP, and trainable batch norm is synchronised, so BN statistics cover
the whole global batch (per-process batch × world size), as the paper's batch 16 needs. With
``accumulate`` N each process runs its share as N micro-batches before the one optimizer step,
and the loss is always that of the whole global batch (:mod:`deeplabcli.training.step`).
``deterministic`` runs everything under :func:`~.determinism.deterministic_mode`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed as D
from ..config import ModelConfig, TrainConfig
from ..data import open_dataset
from ..data.dataset import sample_seed
from ..errors import ConfigError, Interrupted, RunDirectoryError, TrainingDivergedError
from ..evaluation.protocol import evaluate_dataset
from ..inference.segmenter import resolve_device
from ..models import DeepLabV3
from ..progress import message, progress_bar
from ..signals import StopSignals
from ..weights.checkpoint import make_provenance, write_model_files
from .data import drawn_ahead, training_loader
from .determinism import deterministic_mode
from .init import prepare_for_training, training_model
from .memory import out_of_memory_as_error
from .run_dir import (
    MetricsLog,
    check_run_dir,
    claim_run_dir,
    start_run_dir,
    state_stamp,
    tensorboard_writer,
    write_scalars,
)
from .schedule import bn_eval, param_groups, poly_lr, set_lr
from .state import TrainState, capture_rng, load_train_state, restore_rng, save_train_state
from .step import amp_settings, micro_batch_size, train_step


@dataclass
class TrainResult:
    out: Path  # the run directory (a loadable checkpoint)
    iteration: int  # completed iterations
    loss: float | None  # mean training loss of the last logging window
    val_miou: float | None  # last validation mIoU (None without --val-split)
    main: bool = True  # False on the other ranks of a distributed run (they report nothing)


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run (or resume) the training ``config`` describes; see the module docstring."""
    with deterministic_mode(config.deterministic):  # before anything touches CUDA
        device = resolve_device(config.device)
        with D.process_group(device) as world:
            run = _Run(config, world, D.device_for(world, device), progress)
            with run.held:  # the run directory's lock, taken once everything is validated
                return run.run()


class _Run:
    def __init__(self, config: TrainConfig, world: D.World, device: torch.device, show: bool):
        self.config, self.world, self.device, self.show = config, world, device, show
        if config.batch_size % world.size:
            raise ConfigError(
                f"batch size {config.batch_size} cannot be split over {world.size} processes. "
                f"Use a multiple of {world.size}."
            )
        self.micro_batch = micro_batch_size(config, world.size)
        self.out = check_run_dir(config)
        D.barrier()
        self.stamp = state_stamp(self.out)  # what was read; checked again under the lock
        self.state = load_train_state(self.out) if config.resume else None
        self.dataset = open_dataset(config.dataset, config.data_root, config.split)
        self.val = (
            open_dataset(config.dataset, config.data_root, config.val_split)
            if config.val_split
            else None
        )
        self.model = self._model()
        self.log = MetricsLog(self.out)
        self.window: dict[str, float] = _empty_window()  # this rank's; restored by _restore
        self.val_miou: float | None = None
        self._last_loss: float | None = None
        self.saved = self.state.iteration if self.state else 0  # the last iteration saved
        self.held = contextlib.ExitStack()  # the lock on the run directory (see _begin)

    # ------------------------------------------------------------------ setup
    def _say(self, text: str) -> None:
        if self.world.is_main and self.show:
            message(text)

    def _model(self) -> DeepLabV3:
        config = self.config
        if self.state is not None:
            model = DeepLabV3(ModelConfig.from_dict(self.state.extra["model_config"]))
            model.load_state_dict(self.state.model)
            model.provenance = self.state.extra.get("provenance", {})
        else:
            model = training_model(config, self.dataset.class_names, say=self._say)
            model.provenance = model.provenance or make_provenance(
                config.init, trained_by="deeplab train"
            )
        model, self.frozen = prepare_for_training(model, config, self.world, self.device)
        return model

    def _train_mode(self) -> None:
        self.model.train()
        bn_eval(self.frozen)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        config, world = self.config, self.world
        net: nn.Module = self.model
        if world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        optimizer = torch.optim.SGD(
            param_groups(
                self.model, config.weight_decay, classifier_lr_multiplier=config.classifier_lr_mult
            ),
            lr=config.lr,
            momentum=config.momentum,
        )
        amp_dtype, scaler = amp_settings(self.device, config.amp)
        start = self._restore(optimizer, scaler)
        if start >= config.iters:
            self._say(f"{self.out} already finished {start} iterations; nothing to do.")
            return TrainResult(self.out, start, None, None, world.is_main)
        self._train_mode()
        loader = training_loader(
            self.dataset, self.model.config.preprocessing, config, world,
            position=self.state.data_position if self.state else 0,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        batches = drawn_ahead(loader)  # data and crop problems surface before anything is written
        self._begin(start, optimizer, scaler)
        writer = tensorboard_writer(self.out, start) if world.is_main else None
        tick, done = time.perf_counter(), start
        with (
            # closed however the loop ends: an interrupted run keeps its last scalars
            contextlib.closing(writer) if writer is not None else contextlib.nullcontext(),
            StopSignals() as signals,
            progress_bar(
                config.iters, "train", disable=not (self.show and world.is_main), completed=start
            ) as bar,
        ):
            for done, batch in enumerate(batches, start=start + 1):
                lr = poly_lr(config.lr, done - 1, config.iters, config.lr_power)
                set_lr(optimizer, lr)
                images = batch["image"].to(self.device, non_blocking=True)
                if self.device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                target = batch["mask"].to(self.device, non_blocking=True)
                with out_of_memory_as_error(
                    config.crop_size, self.micro_batch, self.device, accumulate=config.accumulate
                ):
                    loss = train_step(
                        net, images, target, optimizer, accumulate=config.accumulate,
                        aux_weight=config.aux_weight,
                        align_corners=self.model.config.align_corners,
                        amp_dtype=amp_dtype, scaler=scaler,
                    )  # fmt: skip
                if D.any_rank(not math.isfinite(float(loss))):  # save nothing diverged
                    raise TrainingDivergedError(float(loss), done, lr, self.out, self.saved)
                self.window["loss_sum"] += float(loss)
                self.window["steps"] += 1
                last = done == config.iters
                if done % config.log_every == 0 or last:
                    record = self._log_window(done, lr, time.perf_counter() - tick, writer)
                    tick = time.perf_counter()
                    bar.update(loss=record["loss"], lr=lr)
                if self.val is not None and (done % config.val_every == 0 or last):
                    try:
                        self._validate(done, writer)
                    except Exception:
                        if not signals.requested:  # Ctrl-C also stops the loader's workers:
                            raise  # then skip this validation and save below
                        self._train_mode()
                stop = D.any_rank(signals.requested)
                if done % config.save_every == 0 or last or stop:
                    self._save(done, optimizer, scaler)
                bar.advance()
                if stop:
                    name = signals.received.name if signals.received else "a signal"
                    raise Interrupted(
                        f"stopped by {name} after iteration {done} of {config.iters}; the run is "
                        f"saved in {self.out}. Resume it with `deeplab train --out {self.out} "
                        "--resume`.",
                        exit_code=signals.exit_code,
                    )
        return TrainResult(self.out, done, self._last_loss, self.val_miou, world.is_main)

    def _log_window(self, done: int, lr: float, seconds: float, writer: Any) -> dict[str, Any]:
        sums = torch.tensor([self.window["loss_sum"], self.window["steps"]], dtype=torch.float64)
        D.all_reduce_sum(sums)
        steps = int(self.window["steps"])
        record = {
            "iteration": done,
            "epoch": done * self.config.batch_size / len(self.dataset),
            "loss": float(sums[0] / sums[1]),
            "lr": lr,
            "it_per_s": steps / seconds if seconds > 0 else None,
        }
        self._last_loss = record["loss"]
        self.window = _empty_window()
        if self.world.is_main:
            self.log.append(record)
            write_scalars(writer, done, {"train/loss": record["loss"], "train/lr": lr})
        return record

    def _validate(self, done: int, writer: Any) -> None:
        assert self.val is not None
        metrics = evaluate_dataset(
            self.model, self.val, device=self.device, world=self.world, optimize=False,
            workers=self.config.workers,
        ).metrics  # fmt: skip
        self._train_mode()
        self.val_miou = metrics.miou
        record = {
            "iteration": done,
            "val_miou": metrics.miou,
            "val_pixel_accuracy": metrics.pixel_accuracy,
        }
        if self.world.is_main:
            self.log.append(record)
            write_scalars(writer, done, {"val/miou": metrics.miou})
            self._say(f"iteration {done}: val mIoU {metrics.miou:.4f} on {len(self.val)} images")

    # ------------------------------------------------------------------ state
    def _restore(self, optimizer: torch.optim.Optimizer, scaler: Any) -> int:
        if self.state is None:
            torch.manual_seed(_dropout_seed(self.config.seed, self.world.rank))
            return 0
        state = self.state
        if state.world_size != self.world.size:
            raise RunDirectoryError(
                f"{self.out} was trained by {state.world_size} processes, this is {self.world.size}. "
                f"Resume it with the same number (torchrun --nproc-per-node {state.world_size})."
            )
        optimizer.load_state_dict(state.optimizer)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        restore_rng(state.rng[self.world.rank])
        self.window = dict(state.log[self.world.rank])
        return state.iteration

    def _begin(self, start: int, optimizer: torch.optim.Optimizer, scaler: Any) -> None:
        """Everything is validated: lock the run directory (rank 0, until the run ends), remove
        the temporaries of a killed save, then start a new run (its files, iteration 0 saved)
        or cut a resumed run's metrics back to its checkpoint."""
        problem = None
        if self.world.is_main:
            try:
                self.held.enter_context(claim_run_dir(self.config, self.stamp))
            except RunDirectoryError as error:
                problem = str(error)
        problems = D.all_gather_objects(problem)  # every rank stops when rank 0 cannot claim
        if problems[0] is not None:
            raise RunDirectoryError(problems[0])
        if self.world.is_main:
            if self.state is None:
                start_run_dir(self.config)
            else:
                self.log.truncate(start)
        D.barrier()
        if start == 0:
            self._save(0, optimizer, scaler)
        else:
            self._say(f"Resuming {self.out} at iteration {start} of {self.config.iters}.")

    def _save(self, done: int, optimizer: torch.optim.Optimizer, scaler: Any) -> None:
        rng = D.all_gather_objects(capture_rng())
        windows = D.all_gather_objects(dict(self.window))
        self.saved = done  # the iteration a divergence falls back to
        if self.world.is_main:
            training = {"run": str(self.out), "iteration": done}
            provenance = {**self.model.provenance, "training": training}
            write_model_files(self.model, self.out, provenance=provenance)
            state = TrainState(
                iteration=done,
                data_position=done * self.config.batch_size,
                model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler is not None else None,
                rng=rng,
                log=windows,
                world_size=self.world.size,
                extra={"model_config": self.model.config.to_dict(), "provenance": provenance},
            )  # fmt: skip
            save_train_state(state, self.out)
        D.barrier()


def _empty_window() -> dict[str, float]:
    return {"loss_sum": 0.0, "steps": 0.0}


def _dropout_seed(seed: int, rank: int) -> int:
    return sample_seed(seed, 2, rank)
