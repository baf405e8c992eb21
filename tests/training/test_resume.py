"""Exact resume across real processes: `deeplab train` killed with SIGKILL, or stopped with
Ctrl-C (SIGINT to its whole process group, data-loading workers included), then resumed, ends
with the same weights and metrics as a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.runs import assert_same_weights, metrics, saved_iteration
from support.synthetic import make_shapes_voc

from deeplabcli.cli import main

ROOT = Path(__file__).resolve().parents[2]
ITERS = 20


def train_args(data: Path, out: Path, workers: int = 0) -> list[str]:
    return [
        "train", "--data-root", str(data), "--split", "train", "--model-arch", "deeplabv3_tiny",
        "--init", "none", "--crop-size", "40", "--batch-size", "2", "--iters", str(ITERS),
        "--save-every", "5", "--log-every", "2", "--workers", str(workers), "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 6}, size=48)


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    result = CliRunner().invoke(main, [*train_args(data, out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def start_and_wait(args: list[str], run: Path, iteration: int) -> subprocess.Popen:
    """Start `python -m deeplabcli ARGS` in its own process group; return once its saved state
    has reached ``iteration``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "deeplabcli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while saved_iteration(run) < iteration:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not reach its checkpoint in time"
        time.sleep(0.02)
    return process


def resume(run: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Trained {ITERS} iterations")


def test_sigkill_then_resume(data: Path, straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start_and_wait(train_args(data, run), run, 5)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    stopped_at = saved_iteration(run)
    assert 5 <= stopped_at < ITERS  # killed mid-run; whatever came after the save is lost
    resume(run)
    assert_same_weights(straight, run)
    assert metrics(run) == metrics(straight)


def test_ctrl_c_then_resume(data: Path, straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start_and_wait(train_args(data, run, workers=2), run, 5)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    stopped_at = saved_iteration(run)
    assert 5 <= stopped_at < ITERS
    assert err.splitlines()[-1] == (
        f"Error: stopped by SIGINT after iteration {stopped_at} of {ITERS}; the run is saved in "
        f"{run}. Resume it with `deeplab train --out {run} --resume`."
    )
    assert "Traceback" not in err
    resume(run)
    assert_same_weights(straight, run)
    assert metrics(run) == metrics(straight)
