"""``--deterministic``: PyTorch's deterministic settings for one run, then the previous ones;
identical runs, identical weights; an operation without a deterministic kernel is one error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from support.runs import assert_same_weights, metrics
from support.synthetic import make_shapes_voc

from deeplabcli.config import TrainConfig
from deeplabcli.errors import NondeterministicOpError
from deeplabcli.training import loop as loop_module
from deeplabcli.training.determinism import deterministic_mode, nondeterministic_op
from deeplabcli.training.loop import train

TORCH_MESSAGE = (
    "max_unpooling2d_forward_out does not have a deterministic implementation, but you set "
    "'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for this "
    "operation, or you can use the 'warn_only=True' option, if that's acceptable for your "
    "application."
)


def test_the_operation_is_read_from_torchs_error() -> None:
    assert nondeterministic_op(RuntimeError(TORCH_MESSAGE)) == "max_unpooling2d_forward_out"
    assert nondeterministic_op(RuntimeError("CUDA error: out of memory")) is None
    assert nondeterministic_op(ValueError(TORCH_MESSAGE)) is None


def test_deterministic_mode_sets_and_restores_torchs_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with deterministic_mode(False):
        assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's reproducible choice
    with deterministic_mode(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    with pytest.raises(NondeterministicOpError) as caught, deterministic_mode(True):
        raise RuntimeError(TORCH_MESSAGE)
    assert str(caught.value) == (
        "--deterministic: PyTorch has no deterministic implementation of "
        "max_unpooling2d_forward_out (used by this model). Train without --deterministic "
        "(CPU runs are reproducible without it)."
    )
    assert not torch.are_deterministic_algorithms_enabled()  # restored after an error too
    with pytest.raises(RuntimeError, match="something else"), deterministic_mode(True):
        raise RuntimeError("something else")


def test_two_deterministic_cpu_runs_give_identical_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout on, BN trained: every step runs under deterministic algorithms (the model's
    deterministic layers included), and the two runs end bit-identical."""
    data = make_shapes_voc(tmp_path / "voc", {"train": 4}, size=48)
    seen: list[bool] = []
    real_step = loop_module.train_step

    def recording_step(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", recording_step)
    runs = []
    for name in ("a", "b"):
        config = TrainConfig(
            dataset="voc", data_root=str(data), split="train", arch="deeplabv3_tiny",
            init="none", crop_size=40, batch_size=4, accumulate=2, iters=3, log_every=1,
            workers=0, device="cpu", deterministic=True, out=str(tmp_path / name),
        )  # fmt: skip
        runs.append(train(config, progress=False).out)
    assert seen == [True] * 6
    assert not torch.are_deterministic_algorithms_enabled()
    assert_same_weights(runs[0], runs[1])
    assert metrics(runs[0]) == metrics(runs[1])
