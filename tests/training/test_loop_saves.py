"""What the training loop saves: nothing after a loss turns NaN, never half a weights file, and
frozen batch norm exactly as it was loaded."""

from __future__ import annotations

import errno
import math
import os
import signal
from pathlib import Path

import pytest
import safetensors.torch
import torch
from support.hashes import sha256
from support.runs import saved_iteration, weights
from support.synthetic import make_shapes_voc
from torch import nn

from deeplabcli.config import TrainConfig
from deeplabcli.data import open_dataset
from deeplabcli.errors import DiskFullError, Interrupted, TrainingDivergedError
from deeplabcli.training import loop as train_module
from deeplabcli.training.init import training_model
from deeplabcli.training.loop import train
from deeplabcli.training.schedule import poly_lr
from deeplabcli.weights.checkpoint import load_checkpoint

RUN_FILES = ("model.safetensors", "config.json", "train_state.pt")


@pytest.fixture(scope="module")
def shapes_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 6}, size=48)


def tiny(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(
        dataset="voc", data_root=str(data), split="train", arch="deeplabv3_tiny", init="none",
        crop_size=40, batch_size=2, iters=10, save_every=2, log_every=2, workers=0,
        device="cpu", out=str(out),
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def fingerprints(run: Path) -> dict[str, str]:
    return {name: sha256(run / name) for name in RUN_FILES}


def record_saves(monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, str]]:
    """Iteration → the run files' sha256 right after each save of the loop."""
    saves: dict[int, dict[str, str]] = {}
    real = train_module._Run._save

    def save_and_record(self, done, optimizer, scaler):
        real(self, done, optimizer, scaler)
        saves[done] = fingerprints(Path(self.out))

    monkeypatch.setattr(train_module._Run, "_save", save_and_record)
    return saves


def test_a_non_finite_loss_stops_before_anything_is_saved_over_the_last_checkpoint(
    shapes_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss of step 6 (a save step) is NaN: the run stops with one line, and the run
    directory is byte for byte what the save of step 4 wrote."""
    config = tiny(shapes_voc, tmp_path / "run")
    real = train_module.train_step
    steps = {"n": 0}

    def nan_at_six(*args, **kwargs):
        steps["n"] += 1
        loss = real(*args, **kwargs)
        return torch.full_like(loss, float("nan")) if steps["n"] == 6 else loss

    monkeypatch.setattr(train_module, "train_step", nan_at_six)
    saves = record_saves(monkeypatch)
    with pytest.raises(TrainingDivergedError) as stopped:
        train(config, progress=False)
    lr = poly_lr(0.007, 5, 10, 0.9)
    assert str(stopped.value) == (
        f"the training loss became nan at iteration 6 (lr {lr:.3g}), so the training diverged; "
        f"{config.out} keeps its checkpoint of iteration 4 and nothing after it. Train again "
        "with a lower --lr, in another --out or with --overwrite."
    )
    run = Path(config.out)
    assert sorted(saves) == [0, 2, 4]
    assert fingerprints(run) == saves[4]
    assert saved_iteration(run) == 4
    assert not list(run.glob(".*.tmp"))


def test_an_infinite_loss_after_a_resume_keeps_the_resumed_checkpoint(
    shapes_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny(shapes_voc, tmp_path / "run", save_every=4)
    real = train_module.train_step
    steps = {"n": 0}

    def interrupt_at_six(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)  # the loop finishes the step, saves, stops
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", interrupt_at_six)
    with pytest.raises(Interrupted):
        train(config, progress=False)
    before = fingerprints(Path(config.out))
    assert saved_iteration(Path(config.out)) == 6
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: real(*a, **k) * math.inf)
    with pytest.raises(TrainingDivergedError) as stopped:
        train(config.replace(resume=True), progress=False)
    assert str(stopped.value).startswith(
        f"the training loss became inf at iteration 7 (lr {poly_lr(0.007, 6, 10, 0.9):.3g}), so "
        f"the training diverged; {config.out} keeps its checkpoint of iteration 6 and nothing "
        "after it."
    )
    assert fingerprints(Path(config.out)) == before


def test_a_failed_weights_write_leaves_the_last_model_file_whole(
    shapes_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run directory's model.safetensors is written through a temporary and a rename: a
    write that fails half-way (here: the disk fills up) leaves the previous file intact."""
    config = tiny(shapes_voc, tmp_path / "run", iters=4)
    run = Path(config.out)
    real = safetensors.torch.save_file
    calls: list[str] = []
    previous: dict[str, str] = {}

    def fail_the_third_write(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:  # the saves of iterations 0, 2, then 4
            previous.update(fingerprints(run))
            Path(filename).write_bytes(b"half a weights file")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_the_third_write)
    with pytest.raises(DiskFullError) as failed:
        train(config, progress=False)
    assert str(failed.value) == str(DiskFullError(run / "model.safetensors"))
    assert Path(calls[2]).parent == run and Path(calls[2]).name != "model.safetensors"
    assert fingerprints(run) == previous  # iteration 2's files, untouched
    assert saved_iteration(run) == 2
    assert not list(run.glob(".*.tmp"))
    load_checkpoint(run)  # still a whole, loadable checkpoint


def _batch_norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    keys = ("running_mean", "running_var", "num_batches_tracked", "weight", "bias")
    state = model.state_dict()
    return {f"{n}.{k}": state[f"{n}.{k}"].clone() for n in names for k in keys}


def test_frozen_batch_norm_is_unchanged_after_two_steps_of_two_images(
    shapes_voc: Path, tmp_path: Path
) -> None:
    """``--freeze-bn``: after two optimizer steps at batch 2 every BN statistic and affine
    parameter is still the initial model's, while the convolutions trained; with trained BN
    (the same run otherwise) the running means move."""
    dataset = open_dataset("voc", shapes_voc, "train")
    results = {}
    for frozen in (True, False):
        config = tiny(shapes_voc, tmp_path / f"frozen-{frozen}", iters=2, freeze_bn=frozen,
                      bn_momentum=0.1)  # fmt: skip
        initial = training_model(config, dataset.class_names, say=lambda _: None)
        start = _batch_norm_state(initial)
        assert start and all(k in start for k in ("backbone.bn1.running_mean",))
        train(config, progress=False)
        after = weights(Path(config.out))
        changed = sorted(k for k in start if not torch.equal(after[k], start[k]))
        trained = not torch.equal(
            after["head.classifier.weight"], initial.state_dict()["head.classifier.weight"]
        )
        results[frozen] = (changed, trained)
    frozen_changes, frozen_trained = results[True]
    assert frozen_changes == [] and frozen_trained
    moving_changes, _ = results[False]
    assert "backbone.bn1.running_mean" in moving_changes
