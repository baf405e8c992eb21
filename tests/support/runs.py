"""Reading training run directories in tests: weights, metrics, the saved iteration."""

from __future__ import annotations

from pathlib import Path

import torch

from deeplabcli.training.run_dir import MetricsLog, without_timing
from deeplabcli.weights.formats import read_safetensors


def weights(run: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(run / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ: {different[:5]}"


def metrics(run: Path) -> list[dict]:
    return without_timing(MetricsLog(run).records())


def saved_iteration(run: Path) -> int:
    try:
        return int(torch.load(run / "train_state.pt", weights_only=True)["iteration"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1
