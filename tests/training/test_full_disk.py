"""`deeplab train` on a real full disk (issue 13 §4): a small tmpfs as --out. One `Error:` line
naming the file, no traceback, no temporaries, the previous checkpoint intact, and the run
restartable (nothing saved yet) or resumable (a checkpoint saved) once there is space again.

Skipped, with the reason, where a tmpfs cannot be mounted; the simulated ENOSPC tests in
test_run_dir.py run everywhere."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support.disks import fill, resize_tmpfs, small_tmpfs
from support.hashes import sha256
from support.runs import saved_iteration
from support.synthetic import make_shapes_voc

from deeplabcli.cli import main

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--split", "train", "--model-arch", "deeplabv3_tiny", "--init", "none", "--crop-size",
        "32", "--batch-size", "2", "--workers", "0", "-q"]  # fmt: skip
FIX = "Free space on that disk or choose another output location."


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 4}, size=40)


def test_a_2mb_disk_fails_the_first_save_and_the_run_starts_again(data, tmp_path) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        notes = disk / "notes.txt"
        notes.write_text("the user's notes\n")
        before = sha256(notes)
        out = disk / "run"
        args = ["train", "--data-root", str(data), *FAST, "--iters", "2", "--out", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        # the weights (1 MB) fit, the training state (2 MB) does not
        assert error_lines(result.stderr) == [
            f"Error: no space left on device while writing {out / 'train_state.pt'}. {FIX}"
        ]
        assert "Traceback" not in result.output
        assert sorted(p.name for p in out.iterdir()) == [
            "config.json", "model.safetensors", "train_config.json"]  # fmt: skip
        assert sha256(notes) == before
        resize_tmpfs(disk, "16m")
        again = CliRunner().invoke(main, args)  # no --overwrite: nothing was saved
        assert again.exit_code == 0, again.output
        assert saved_iteration(out) == 2 and sha256(notes) == before


def test_a_disk_that_fills_mid_run_keeps_the_last_checkpoint(data, tmp_path) -> None:
    iters = 12
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        out = disk / "run"
        process = subprocess.Popen(
            [sys.executable, "-m", "deeplabcli", "train", "--data-root", str(data), *FAST,
             "--iters", str(iters), "--save-every", "1", "--out", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while saved_iteration(out) < 2:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        filler = fill(disk)  # another program takes the rest of the disk
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 1, err
        lines = error_lines(err)
        assert len(lines) == 1 and "Traceback" not in err, err
        names = "model.safetensors|config.json|train_state.pt|metrics.jsonl"
        assert re.fullmatch(
            rf"Error: no space left on device while writing {re.escape(str(out))}/({names})\. "
            + re.escape(FIX),
            lines[0],
        ), lines
        saved = saved_iteration(out)
        assert 2 <= saved < iters
        state = torch.load(out / "train_state.pt", weights_only=True)  # complete and loadable
        assert state["iteration"] == saved
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        filler.unlink()
        resumed = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "-q"])
        assert resumed.exit_code == 0, resumed.output
        assert saved_iteration(out) == iters
