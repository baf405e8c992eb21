"""The training engine: it learns, its batches are aligned, and it resumes bit-exactly."""

from __future__ import annotations

import json
import os
import signal
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from support.runs import assert_same_weights, metrics
from support.synthetic import make_shapes_folder, make_shapes_voc

from deeplabcli.config import IGNORE_INDEX, Preprocessing, TrainConfig
from deeplabcli.data import open_dataset
from deeplabcli.distributed import World
from deeplabcli.errors import Interrupted
from deeplabcli.training import loop as train_module
from deeplabcli.training.data import training_loader
from deeplabcli.training.loop import train
from deeplabcli.training.run_dir import MetricsLog
from deeplabcli.weights.checkpoint import load_checkpoint


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(
        dataset="voc", data_root=str(data), split="train", arch="deeplabv3_tiny", init="none",
        crop_size=40, batch_size=2, iters=20, save_every=5, log_every=2, workers=0,
        device="cpu", out=str(out),
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def shapes_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 6, "val": 3}, size=48)


def test_training_learns_shapes(tmp_path: Path) -> None:
    """Coloured shapes on noise (4 classes): loss falls by ≥ 50 %, val mIoU > 0.8.

    60 iterations are 1/500 of the paper's schedule, so BN momentum is raised from 0.0003 to
    0.1: with 0.0003 the running statistics (used at validation) would barely leave their
    initial values in so few steps.
    """
    data = make_shapes_folder(tmp_path / "shapes", {"train": 64, "val": 16}, size=96)
    config = TrainConfig(
        dataset="folder", data_root=str(data), split="train", arch="deeplabv3_tiny",
        init="none", output_stride=8, crop_size=96, batch_size=8, lr=0.05, iters=60,
        bn_momentum=0.1, val_split="val", val_every=60, log_every=10, workers=0,
        device="cpu", out=str(tmp_path / "run"),
    )  # fmt: skip
    result = train(config, progress=False)
    losses = [r["loss"] for r in MetricsLog(result.out).records() if "loss" in r]
    assert len(losses) == 6
    assert losses[-1] <= 0.5 * losses[0], losses
    assert result.val_miou is not None and result.val_miou > 0.8, result.val_miou
    model = load_checkpoint(result.out)  # the run directory is a checkpoint
    assert model.config.class_names == ("background", "square", "disc", "triangle")
    assert model.config.output_stride == 8


def test_training_batches_are_aligned_and_padded(shapes_voc: Path, tmp_path: Path) -> None:
    """What the loop trains on: every pixel's label matches the colour drawn there, and the
    padding (crops larger than the scaled image) is the mean colour with label 255."""
    config = tiny_config(shapes_voc, tmp_path / "r", crop_size=120)
    dataset = open_dataset("voc", shapes_voc, "train")
    prep = Preprocessing()
    loader = training_loader(dataset, prep, config, World())
    mean, std = torch.tensor(prep.mean).view(3, 1, 1), torch.tensor(prep.std).view(3, 1, 1)
    colours = torch.tensor([[220, 40, 40], [40, 200, 60], [50, 70, 230]], dtype=torch.float32)
    seen_pad = 0
    for step, batch in enumerate(loader):
        assert batch["image"].shape == (2, 3, 120, 120) and batch["mask"].shape == (2, 120, 120)
        pixels = (batch["image"] * std + mean) * 255  # back to 0..255
        for image, mask in zip(pixels, batch["mask"], strict=True):
            pad = mask == IGNORE_INDEX
            seen_pad += int(pad.sum())
            assert torch.allclose(
                image[:, pad], torch.tensor(prep.mean).view(3, 1) * 255, atol=1e-3
            )
            for cls in (1, 2, 3):  # shape interiors: the nearest drawn colour is their class's
                inside = mask == cls
                if inside.sum() > 50:
                    rgb = image[:, inside].T
                    nearest = torch.cdist(rgb, colours).argmin(1) + 1
                    assert (nearest == cls).float().mean() > 0.8
        if step == 4:
            break
    assert seen_pad > 0  # 48-pixel images scaled by ≤ 2 never fill a 120 crop


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int, signum: int) -> None:
    """Send ``signum`` to this process during optimizer step ``step`` (1-based)."""
    real = train_module.train_step
    calls = {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_then_signal)


@pytest.fixture(scope="module")
def straight(shapes_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """20 iterations without a stop: what every interrupted-and-resumed run must equal."""
    config = tiny_config(shapes_voc, tmp_path_factory.mktemp("straight") / "run")
    train(config, progress=False)
    return config


@pytest.mark.parametrize(
    ("signum", "code", "at"), [(signal.SIGINT, 130, 7), (signal.SIGTERM, 143, 12)]
)
def test_interrupted_run_resumes_bit_exactly(
    shapes_voc: Path,
    straight: TrainConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
    code: int,
    at: int,
) -> None:
    broken = tiny_config(shapes_voc, tmp_path / "broken")
    _interrupt_at(monkeypatch, at, signum)
    with pytest.raises(Interrupted) as stopped:
        train(broken, progress=False)
    monkeypatch.undo()
    name = signal.Signals(signum).name
    assert stopped.value.exit_code == code
    assert str(stopped.value) == (
        f"stopped by {name} after iteration {at} of 20; the run is saved in {broken.out}. "
        f"Resume it with `deeplab train --out {broken.out} --resume`."
    )
    state = torch.load(Path(broken.out) / "train_state.pt", weights_only=True)
    assert state["iteration"] == at and state["data_position"] == 2 * at
    # resuming with data-loading workers: augmentation does not depend on who computes it
    result = train(broken.replace(resume=True, workers=2), progress=False)
    assert result.iteration == 20
    assert_same_weights(Path(straight.out), Path(broken.out))
    assert metrics(Path(broken.out)) == metrics(Path(straight.out))
    assert [r["iteration"] for r in metrics(Path(straight.out))] == list(range(2, 21, 2))


def test_resume_drops_metrics_written_after_the_checkpoint(
    shapes_voc: Path, straight: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL after a checkpoint leaves later metrics lines (and maybe half a line): resume
    rewrites them, so the log ends up as if the run had never stopped."""
    # the state a run writes at iteration 5 (taken from an identical run stopped there) ...
    early = tiny_config(shapes_voc, tmp_path / "early")
    _interrupt_at(monkeypatch, 5, signal.SIGINT)
    with pytest.raises(Interrupted):
        train(early, progress=False)
    monkeypatch.undo()
    # ... next to a log that went on to iteration 7 and was cut mid-line by the kill
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in ("config.json", "model.safetensors", "train_config.json"):
        (killed / name).write_bytes((Path(straight.out) / name).read_bytes())
    (killed / "train_state.pt").write_bytes((Path(early.out) / "train_state.pt").read_bytes())
    lines = (Path(straight.out) / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[:3]) + '\n{"iteration": 8, "lo')
    train(straight.replace(out=str(killed), resume=True), progress=False)
    assert_same_weights(Path(straight.out), killed)
    assert metrics(killed) == metrics(Path(straight.out))


def test_metrics_and_config_files(shapes_voc: Path, tmp_path: Path) -> None:
    config = tiny_config(
        shapes_voc, tmp_path / "run", iters=4, log_every=3, val_split="val", val_every=2
    )
    train(config, progress=False)
    run = Path(config.out)
    records = MetricsLog(run).records()
    assert [r["iteration"] for r in records] == [2, 3, 4, 4]
    train_records = [r for r in records if "loss" in r]
    assert set(train_records[0]) == {"iteration", "epoch", "loss", "lr", "it_per_s"}
    assert train_records[0]["epoch"] == pytest.approx(3 * 2 / 6)
    assert train_records[0]["lr"] == pytest.approx(0.007 * (1 - 2 / 4) ** 0.9)
    assert {"val_miou", "val_pixel_accuracy"} <= set(records[0])
    assert json.loads((run / "train_config.json").read_text())["iters"] == 4
    document = json.loads((run / "config.json").read_text())
    assert document["provenance"]["training"] == {"run": str(run), "iteration": 4}
    assert not list(run.glob(".*.tmp"))  # no temporary files left behind
    assert np.isfinite(train_records[-1]["loss"])


def test_quiet_on_cpu_and_tensorboard_when_installed(
    shapes_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU run raises no warning at all; with `tensorboard` importable, the same scalars as
    metrics.jsonl go to RUN/tensorboard (a stand-in module records them here)."""
    calls: list[tuple] = []

    class SummaryWriter:
        def __init__(self, log_dir: str, purge_step: int) -> None:
            calls.append(("open", Path(log_dir).name, purge_step))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, step))

        def close(self) -> None:
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    config = tiny_config(shapes_voc, tmp_path / "run", iters=4, val_split="val", val_every=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(config, progress=False)
    assert calls == [
        ("open", "tensorboard", 0),
        ("train/loss", 2), ("train/lr", 2),
        ("train/loss", 4), ("train/lr", 4), ("val/miou", 4),
        ("close",),
    ]  # fmt: skip
