"""Training under `torchrun --nproc-per-node 2` on CPU (gloo): synchronised batch norm equals one
process holding the whole batch; DDP training writes one checkpoint and resumes bit-exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from support.runs import assert_same_weights, metrics, saved_iteration
from support.synthetic import make_shapes_voc

from deeplabcli import build_model
from deeplabcli.config import TrainConfig
from deeplabcli.distributed import World
from deeplabcli.training.init import prepare_for_training
from deeplabcli.training.syncbn import DistributedBatchNorm2d

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

SYNC_BN_CHECK = textwrap.dedent(
    """
    import torch, torch.distributed as dist
    from torch import nn
    from deeplabcli.training.syncbn import DistributedBatchNorm2d

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    probe = torch.randn(4, 3, 5, 5)  # loss = sum(y * probe): any upstream gradient
    reference = nn.BatchNorm2d(3, momentum=0.3)
    nn.init.uniform_(reference.weight); nn.init.uniform_(reference.bias)
    synced = DistributedBatchNorm2d(3, momentum=0.3)
    synced.load_state_dict(reference.state_dict())

    full = x.clone().requires_grad_()
    y_ref = reference(full)
    (y_ref * probe).sum().backward()

    part = x[2 * rank : 2 * rank + 2].clone().requires_grad_()  # one image pair per rank
    y = synced(part)
    (y * probe[2 * rank : 2 * rank + 2]).sum().backward()
    grads = torch.stack([synced.weight.grad, synced.bias.grad])
    dist.all_reduce(grads)  # what DDP does with parameter gradients (times world size)

    close = lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert close(y, y_ref[2 * rank : 2 * rank + 2]), "outputs differ"
    assert close(part.grad, full.grad[2 * rank : 2 * rank + 2]), "input gradients differ"
    assert close(grads[0], reference.weight.grad) and close(grads[1], reference.bias.grad)
    assert close(synced.running_mean, reference.running_mean)
    assert close(synced.running_var, reference.running_var)
    print(f"rank {rank} ok")
    dist.destroy_process_group()
    """
)

pytestmark = pytest.mark.distributed


def torchrun(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_sync_batch_norm_equals_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(SYNC_BN_CHECK)
    result = torchrun([str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    # both ranks share one pipe: their lines may interleave, so look for each report on its own
    assert sorted(re.findall(r"rank (\d) ok", result.stdout)) == ["0", "1"], result.stdout


def test_trainable_bn_is_synchronised_only_when_distributed() -> None:
    config = TrainConfig(batch_size=2, crop_size=33)
    for world, synced in ((World(), False), (World(rank=0, size=2), True)):
        model, frozen = prepare_for_training(
            build_model("deeplabv3_tiny", num_classes=3), config, world, torch.device("cpu")
        )
        kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
        assert kinds == ({DistributedBatchNorm2d} if synced else {torch.nn.BatchNorm2d})
        assert frozen == []
    # 1 image per process is enough for BN when 2 processes share their statistics
    prepare_for_training(
        build_model("deeplabv3_tiny", num_classes=3),
        config.replace(batch_size=2),
        World(rank=0, size=2),
        torch.device("cpu"),
    )


def test_torchrun_trains_with_sync_bn_and_resumes(tmp_path: Path) -> None:
    data = make_shapes_voc(tmp_path / "voc", {"train": 8}, size=48)

    def args(out: Path) -> list[str]:
        return [
            "-m", "deeplabcli", "train", "--data-root", str(data), "--split", "train",
            "--model-arch", "deeplabv3_tiny", "--init", "none", "--crop-size", "40",
            "--batch-size", "4", "--iters", "8", "--save-every", "2", "--log-every", "2",
            "--workers", "0", "--out", str(out), "-q",
        ]  # fmt: skip

    straight = tmp_path / "straight"
    result = torchrun(args(straight))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Trained 8 iterations") == 1  # rank 0 reports, rank 1 is quiet
    files = sorted(p.name for p in straight.iterdir())
    assert files == [
        "config.json", "metrics.jsonl", "model.safetensors", "train_config.json", "train_state.pt",
    ]  # fmt: skip
    state = torch.load(straight / "train_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2

    # Ctrl-C on the whole job after a checkpoint, then resume with torchrun
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [*TORCHRUN, *args(stopped)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while saved_iteration(stopped) < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _out, err = process.communicate(timeout=120)
    assert "stopped by SIGINT after iteration" in err, err[-3000:]
    assert 2 <= saved_iteration(stopped) < 8
    resumed = torchrun([*args(stopped), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(straight, stopped)
    assert metrics(stopped) == metrics(straight)

    # the same run in one process is refused: its random state belongs to two
    single = subprocess.run(
        [sys.executable, *args(stopped), "--resume"], cwd=ROOT, capture_output=True, text=True
    )
    assert single.stderr.splitlines()[-1] == (
        f"Error: {stopped} was trained by 2 processes, this is 1. Resume it with the same "
        "number (torchrun --nproc-per-node 2)."
    )
