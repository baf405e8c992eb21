"""One optimisation step: the loss of the global batch whatever its split (micro-batches with
--accumulate, processes under torchrun), and a float32 loss under mixed precision."""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.data_builders import save_mask
from support.runs import ROOT, largest_difference, metrics, torchrun, weights
from support.synthetic import make_shapes_voc
from torch import nn
from torch.nn import functional as F

from deeplabcli import build_model
from deeplabcli.config import Preprocessing, TrainConfig
from deeplabcli.data import open_dataset
from deeplabcli.distributed import World
from deeplabcli.errors import ConfigError
from deeplabcli.training.data import training_loader
from deeplabcli.training.loop import train
from deeplabcli.training.step import micro_batch_size, train_step
from deeplabcli.weights.checkpoint import save_checkpoint

#: share of each training image's rows that keep their labels (the rest is 255)
LABELLED_ROWS = (1.0, 0.3, 0.05, 0.02)


@pytest.fixture(scope="module")
def sparse_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training images of 48×48 whose labelled pixels differ up to 48-fold."""
    root = make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 4}, size=48)
    masks = root / "VOC2012" / "SegmentationClass"
    for index, share in enumerate(LABELLED_ROWS):
        path = masks / f"train_{index:04d}.png"
        mask = np.array(Image.open(path))
        mask[max(1, round(share * 48)) :] = 255
        save_mask(path, mask)
    return root


@pytest.fixture(scope="module")
def no_dropout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 21-class tiny DeepLabv3 without dropout, as a checkpoint: a split batch then draws no
    random numbers, so every split must give the same step."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=21, aspp_dropout=0.0)
    return save_checkpoint(model, tmp_path_factory.mktemp("init") / "tiny")


def run_config(data: Path, init: Path, out: Path, **overrides) -> TrainConfig:
    """3 steps of batch 4, crop 40, BN frozen, a loss line per step."""
    values = dict(
        dataset="voc", data_root=str(data), split="train", init=str(init), crop_size=40,
        batch_size=4, iters=3, lr=0.01, freeze_bn=True, log_every=1, save_every=3, workers=0,
        device="cpu", out=str(out),
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def losses(run: Path) -> list[float]:
    return [record["loss"] for record in metrics(run) if "loss" in record]


def assert_same_run(run: Path, reference: Path, init: Path, tolerance: float) -> None:
    """Weights and per-step losses within ``tolerance``, and the weights really trained."""
    assert largest_difference(run, reference) <= tolerance
    assert losses(run) == pytest.approx(losses(reference), abs=tolerance, rel=0)
    assert len(losses(run)) == 3
    assert largest_difference(reference, init) > 1e-3  # the steps moved the weights


class OffsetLogits(nn.Module):
    """Logits = the image's first 3 channels + a learnt per-class offset: (N, 3, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, *, upsample: bool = True) -> dict[str, torch.Tensor]:
        return {"out": x[:, :3] + self.offset.view(1, 3, 1, 1)}


def test_loss_is_the_mean_over_every_labelled_pixel_of_the_batch() -> None:
    """Issue 15's example: 400 and 40 labelled pixels. The step's loss is ΣCE / 440 however
    the batch is split into micro-batches, not the mean of the two images' means."""
    images = torch.zeros(2, 3, 20, 20)
    images[1, 0] = 2.0  # image 1: logits (2, 0, 0) → CE log(1 + 2e⁻²) for class 0
    target = torch.zeros(2, 20, 20, dtype=torch.int64)
    target[1].view(-1)[40:] = 255  # image 0: 400 labelled pixels (CE log 3), image 1: 40
    a, b = math.log(3), math.log(1 + 2 * math.exp(-2))
    expected = (400 * a + 40 * b) / 440  # 1.0206; the mean of the means would be 0.6691
    grads = []
    for accumulate in (1, 2):
        model = OffsetLogits()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = train_step(model, images, target, optimizer, accumulate=accumulate)
        assert float(loss) == pytest.approx(expected, rel=1e-6)
        grads.append(model.offset.grad.clone())
    softmax_a, softmax_b = torch.full((3,), 1 / 3), torch.softmax(torch.tensor([2.0, 0, 0]), 0)
    one_hot = torch.tensor([1.0, 0, 0])
    by_hand = (400 * (softmax_a - one_hot) + 40 * (softmax_b - one_hot)) / 440
    for grad in grads:
        torch.testing.assert_close(grad, by_hand, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="2 images cannot make 3 equal micro-batches"):
        train_step(OffsetLogits(), images, target, optimizer, accumulate=3)


def test_micro_batches_must_split_each_process_share_evenly() -> None:
    assert micro_batch_size(TrainConfig(batch_size=16, accumulate=4), 2) == 2
    with pytest.raises(ConfigError) as caught:
        micro_batch_size(TrainConfig(batch_size=12, accumulate=4), 2)
    assert str(caught.value) == (
        "--accumulate 4 does not divide the 6 images of a step on each of 2 processes "
        "(--batch-size 12). Use a divisor of 6 (1, 2, 3, 6)."
    )


def test_accumulated_steps_equal_the_whole_batch_with_frozen_bn(
    sparse_voc: Path, no_dropout: Path, tmp_path: Path
) -> None:
    """3 steps of batch 4 as 2 micro-batches of 2, or 4 of 1, are 3 steps of batch 4."""
    whole = train(run_config(sparse_voc, no_dropout, tmp_path / "whole"), progress=False).out
    for accumulate in (2, 4):
        split = run_config(sparse_voc, no_dropout, tmp_path / f"acc{accumulate}")
        result = train(split.replace(accumulate=accumulate), progress=False)
        assert_same_run(result.out, whole, no_dropout, 1e-6)


def test_mixed_precision_loss_sees_float32_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast the network runs in bfloat16, but its logits are upsampled and scored in
    float32 outside autocast: the loss sees upsample(float32(logits)), not bfloat16-upsampled
    logits (which differ by bfloat16's rounding)."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=3).eval()  # no BN updates, no dropout
    images = torch.randn(2, 3, 48, 48)
    target = torch.randint(0, 3, (2, 48, 48))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(images, upsample=False)["out"]  # (2, 3, 3, 3) bfloat16
    assert low.dtype == torch.bfloat16 and low.shape[-1] < 48
    expected = F.interpolate(low.float(), size=(48, 48), mode="bilinear")
    rounded = F.interpolate(low, size=(48, 48), mode="bilinear").float()  # resized in bfloat16
    assert float((rounded - expected).abs().max()) > 1e-4  # bfloat16 keeps 8 bits
    seen = []
    cross_entropy = F.cross_entropy

    def spy(logits: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        seen.append((logits.detach().clone(), torch.is_autocast_enabled("cpu")))
        return cross_entropy(logits, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, images, target, optimizer, amp_dtype=torch.bfloat16)
    ((logits, in_autocast),) = seen
    assert logits.dtype == torch.float32 and not in_autocast
    assert torch.equal(logits, expected)
    assert float(loss) == pytest.approx(float(cross_entropy(expected, target)), rel=1e-6)


# ---------------------------------------------------------------- torchrun (2 CPU processes)
RUNS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from deeplabcli.config import TrainConfig
    from deeplabcli.training.loop import train

    dist.init_process_group("gloo")  # one group for all runs (train() leaves it open)
    for values in json.loads(sys.argv[1]):
        train(TrainConfig(**values), progress=False)
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def two_processes(
    sparse_voc: Path, no_dropout: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The same 3 steps as runs of 2 processes (one torchrun launch) and of 1 process:
    ``split`` (2 images per process), ``accumulated`` (--accumulate 2: 1 image per
    micro-batch), ``synced`` (BN trained, synchronised); ``one`` and ``one_bn``: 1 process."""
    root = tmp_path_factory.mktemp("runs")
    configs = {
        "split": run_config(sparse_voc, no_dropout, root / "split"),
        "accumulated": run_config(sparse_voc, no_dropout, root / "accumulated", accumulate=2),
        "synced": run_config(sparse_voc, no_dropout, root / "synced", freeze_bn=False),
    }  # fmt: skip
    script = root / "runs.py"
    script.write_text(RUNS_SCRIPT)
    payload = json.dumps([c.to_dict() for c in configs.values()])
    result = torchrun([str(script), payload], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    one = train(run_config(sparse_voc, no_dropout, root / "one"), progress=False).out
    one_bn = run_config(sparse_voc, no_dropout, root / "one_bn", freeze_bn=False)
    return {
        **{name: Path(c.out) for name, c in configs.items()},
        "one": one,
        "one_bn": train(one_bn, progress=False).out,
    }


def labelled_per_process(data: Path) -> list[list[int]]:
    """Labelled pixels of each of the 2 processes' images at each of the 3 steps."""
    config = run_config(data, Path("unused"), Path("unused"))
    dataset = open_dataset("voc", data, "train")
    loaders = [
        training_loader(dataset, Preprocessing(), config, World(rank=rank, size=2))
        for rank in (0, 1)
    ]
    return [
        [int((batch["mask"] != 255).sum()) for batch in batches]
        for batches in zip(*loaders, strict=True)
    ]


@pytest.mark.distributed
def test_processes_with_very_different_labelled_pixels_give_the_one_process_step(
    sparse_voc: Path, no_dropout: Path, two_processes: dict[str, Path]
) -> None:
    """The global-batch loss: each process weighs its pixels by the all-reduced count, so 2
    processes equal 1 (loss and weights after 3 steps within 1e-6, BN frozen) although their
    shares of labelled pixels differ several-fold (a per-process mean would not)."""
    counts = labelled_per_process(sparse_voc)
    assert all(max(step) >= 3 * max(1, min(step)) for step in counts), counts
    assert_same_run(two_processes["split"], two_processes["one"], no_dropout, 1e-6)


@pytest.mark.distributed
def test_accumulation_under_torchrun_equals_one_process(
    no_dropout: Path, two_processes: dict[str, Path]
) -> None:
    """--accumulate 2 over 2 processes (1 image per micro-batch) is the batch-4 step."""
    assert_same_run(two_processes["accumulated"], two_processes["one"], no_dropout, 1e-6)


@pytest.mark.distributed
def test_synchronised_bn_under_torchrun_equals_one_process(
    no_dropout: Path, two_processes: dict[str, Path]
) -> None:
    """BN trained: synchronised statistics over 2 processes are one process's (within 1e-5),
    running statistics included."""
    assert_same_run(two_processes["synced"], two_processes["one_bn"], no_dropout, 1e-5)
    stats = [k for k in weights(two_processes["one_bn"]) if re.search(r"running_(mean|var)", k)]
    moved = weights(two_processes["one_bn"]), weights(no_dropout)
    assert stats and any(not torch.equal(moved[0][k], moved[1][k]) for k in stats)
