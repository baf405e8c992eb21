"""The run directory of `deeplab train | finetune` (issue 13): one writer at a time (a lock that
dies with its process), everything validated before the directory is touched, stale
temporaries of a killed save removed, a run that saved no state restartable, and a full disk
during a save as one error line with the previous checkpoint intact."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors
import torch
from click.testing import CliRunner
from PIL import Image
from support.hashes import sha256, tree_hashes
from support.runs import saved_iteration, weights
from support.synthetic import make_shapes_voc

from deeplabcli import build_model
from deeplabcli.cli import main
from deeplabcli.training.run_dir import LOCK_NAME, MetricsLog, lock_run_dir
from deeplabcli.weights.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ITERS, LOG_EVERY = 24, 4
FAST = ["--split", "train", "--model-arch", "deeplabv3_tiny", "--init", "none", "--crop-size",
        "32", "--batch-size", "2", "--workers", "0", "-q"]  # fmt: skip


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-root", str(data), *FAST, "--iters", str(ITERS), "--log-every",
            str(LOG_EVERY), "--save-every", "8", "--out", str(out), *extra]  # fmt: skip


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deeplabcli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def in_use(out: Path, pid: int) -> str:
    return (
        f"Error: {out} is in use by another training run (process {pid}). Wait for it to "
        "finish, or choose another --out."
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 4}, size=40)


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration run (copied by the tests that must not change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run("train", "--data-root", data, *FAST, "--iters", "2", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def copy_run(run_dir: Path, to: Path) -> Path:
    to.mkdir()
    for path in run_dir.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


# ---------------------------------------------------------------------- one writer
def test_two_trainings_into_one_out_at_once(data: Path, tmp_path: Path) -> None:
    """Issue 13 §2: both exited 0; train_config.json said one seed, the weights came from the
    other run and metrics.jsonl interleaved both."""
    out = tmp_path / "rc2"
    user_data = tree_hashes(data)
    runs = {seed: start(train_args(data, out, "--seed", str(seed))) for seed in (1, 2)}
    outputs = {seed: process.communicate(timeout=600) for seed, process in runs.items()}
    codes = {seed: process.returncode for seed, process in runs.items()}
    assert sorted(codes.values()) == [0, 1], outputs
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser = 3 - winner
    assert error_lines(outputs[loser][1]) == [in_use(out, runs[winner].pid)], outputs[loser]
    assert "Traceback" not in outputs[loser][1] and outputs[loser][0] == ""
    # everything in the directory is the winner's
    assert json.loads((out / "train_config.json").read_text())["seed"] == winner
    iterations = [r["iteration"] for r in MetricsLog(out).records()]
    assert iterations == list(range(LOG_EVERY, ITERS + 1, LOG_EVERY))
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["iteration"] == ITERS
    saved = weights(out)
    assert all(torch.equal(saved[k], state["model"][k]) for k in saved)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl",
        "model.safetensors", "train_config.json", "train_state.pt"]  # fmt: skip
    assert tree_hashes(data) == user_data


def test_train_and_finetune_refuse_a_locked_run_directory(finished, data, tmp_path) -> None:
    out = copy_run(finished, tmp_path / "run")
    before = tree_hashes(out)
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("deeplabv3_tiny", num_classes=21), tmp_path / "ckpt")
    with lock_run_dir(out):  # another process would hold it the same way
        assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        commands = [
            ["train", "--data-root", data, *FAST, "--iters", "2", "--out", out, "--overwrite"],
            ["finetune", ckpt, "--data-root", data, *FAST[:2], "--crop-size", "32", "--batch-size",
             "2", "--workers", "0", "-q", "--iters", "2", "--out", out, "--overwrite"],
        ]  # fmt: skip
        for args in commands:
            result = run(*args)
            assert result.exit_code == 1, result.output
            assert error_lines(result.stderr) == [in_use(out, os.getpid())], result.output
            assert tree_hashes(out) == {**before, LOCK_NAME: sha256(out / LOCK_NAME)}
    assert tree_hashes(out) == before  # the lock file goes with the lock


def test_a_killed_run_leaves_no_lock_and_resume_removes_its_temporaries(data, tmp_path) -> None:
    """Issue 13 §4: kills during saves left hidden .train_state.pt.*.tmp files forever."""
    out = tmp_path / "run"
    process = start(train_args(data, out))
    deadline = time.monotonic() + 300
    while saved_iteration(out) < 8:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.kill()  # SIGKILL: no clean-up runs, the lock file stays with a dead PID in it
    process.communicate()
    assert (out / LOCK_NAME).read_text() == f"{process.pid}\n"
    stale = [out / ".train_state.pt.0badf00d.tmp", out / ".model.safetensors.12345678.tmp"]
    for path in stale:
        path.write_bytes(b"half a save")
    mine = {out / "notes.txt": b"mine", out / ".train_state.pt.tmp": b"not our pattern",
            out / ".notes.txt.0badf00d.tmp": b"not one of our files"}  # fmt: skip
    for path, content in mine.items():
        path.write_bytes(content)
    theirs = {path.name: sha256(path) for path in mine}
    with lock_run_dir(out):
        refused = run("train", "--out", out, "--resume", "-q")
        assert refused.exit_code == 1
        assert error_lines(refused.stderr) == [in_use(out, os.getpid())]
        assert all(path.exists() for path in stale)  # only the lock's holder removes them
    resumed = run("train", "--out", out, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith(f"Trained {ITERS} iterations")
    assert not any(path.exists() for path in stale)
    assert not (out / LOCK_NAME).exists()
    assert {path.name: sha256(path) for path in mine} == theirs
    assert saved_iteration(out) == ITERS


# ---------------------------------------------------------------------- validate, then write
def test_overwrite_touches_nothing_until_the_data_is_read(finished, data, tmp_path) -> None:
    """Issue 13 §1: `train --out rov --overwrite` with a bad setting deleted the old run first."""
    out = copy_run(finished, tmp_path / "rov")
    before = tree_hashes(out)
    voc = data / "VOC2012"
    bad = tmp_path / "bad"
    for sub in ("JPEGImages", "SegmentationClass"):
        (bad / "VOC2012" / sub).mkdir(parents=True)
    (bad / "VOC2012" / "JPEGImages" / "x.jpg").write_bytes(
        (voc / "JPEGImages" / "train_0000.jpg").read_bytes()
    )
    mask = bad / "VOC2012" / "SegmentationClass" / "x.png"
    Image.open(voc / "SegmentationClass" / "train_0000.png").convert("RGB").save(mask)
    split = tmp_path / "one.txt"
    split.write_text("x\n")
    user_data = tree_hashes(bad)
    result = run("train", "--data-root", bad, *FAST, "--split", split, "--iters", "2",
                 "--out", out, "--overwrite")  # fmt: skip
    assert result.exit_code == 1
    folder = mask.parent
    assert error_lines(result.stderr) == [
        f"Error: {mask} is an RGB colour mask, not a class-index mask. Convert the colour masks "
        f"with `deeplab data convert-masks {folder} -o {folder}_index` (class colours → class "
        f"indices) and use the converted masks in place of {folder}, or save masks as palette "
        "(P) or grayscale (L) PNGs of class indices."
    ]
    assert tree_hashes(out) == before
    assert tree_hashes(bad) == user_data


def test_a_run_that_saved_no_state_starts_again_without_overwrite(data, tmp_path, monkeypatch):
    """Issue 13 §4: a full disk (or a kill) between train_config.json and the first
    train_state.pt left a directory that --resume and a new start both refused."""
    out = tmp_path / "run"

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    result = run("train", "--data-root", data, *FAST, "--iters", "2", "--out", out)
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"Error: no space left on device while writing {out / 'train_state.pt'}. Free space on "
        "that disk or choose another output location."
    ]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "train_config.json"]  # fmt: skip
    monkeypatch.undo()
    resumed = run("train", "--out", out, "--resume", "-q")
    assert error_lines(resumed.stderr) == [
        f"Error: {out} holds no training state (train_state.pt) to resume. Start the run "
        "without --resume, or give the run directory with --out."
    ]
    again = run("train", "--data-root", data, *FAST, "--iters", "2", "--out", out)
    assert again.exit_code == 0, again.output
    assert saved_iteration(out) == 2


def test_a_full_disk_at_a_later_save_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    """Simulated ENOSPC from safetensors (its own error type, the OS message as text)."""
    from safetensors import torch as safetensors_torch

    out = tmp_path / "run"
    real_save_file = safetensors_torch.save_file
    calls: list[dict[str, str]] = []

    def save_file(tensors, filename, metadata=None):
        if len(calls) == 2:  # iterations 0 and 1 are saved; iteration 2 meets a full disk
            calls.append({name: sha256(out / name) for name in ("model.safetensors",
                                                                 "train_state.pt")})  # fmt: skip
            Path(filename).write_bytes(b"half")
            raise safetensors.SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        calls.append({})
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors_torch, "save_file", save_file)
    result = run("train", "--data-root", data, *FAST, "--iters", "3", "--save-every", "1",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"Error: no space left on device while writing {out / 'model.safetensors'}. Free space "
        "on that disk or choose another output location."
    ]
    assert "Traceback" not in result.output
    before = calls[2]
    assert {name: sha256(out / name) for name in before} == before  # iteration 1, untouched
    assert saved_iteration(out) == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "train_config.json", "train_state.pt"]  # fmt: skip
    monkeypatch.undo()
    resumed = run("train", "--out", out, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert saved_iteration(out) == 3
