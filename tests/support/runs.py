"""Training runs in tests: launching torchrun, and reading run directories (weights, metrics,
the saved iteration)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from deeplabcli.training.run_dir import MetricsLog, without_timing
from deeplabcli.weights.formats import read_safetensors

ROOT = Path(__file__).resolve().parents[2]
#: torchrun with two CPU processes (gloo) on this machine
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 ARGS`` from the project root, output captured."""
    return subprocess.run(
        [*TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


def largest_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between the weights of two runs (same tensor names)."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


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
