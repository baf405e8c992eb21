"""The optimisation recipe's pure pieces: poly LR, parameter groups, BN momentum and freezing."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from torch import nn

from deeplabcli import build_model
from deeplabcli.errors import ConfigError
from deeplabcli.training.schedule import (
    batch_norms,
    bn_eval,
    freeze_bn,
    param_groups,
    poly_lr,
    set_bn_momentum,
    set_lr,
)
from deeplabcli.training.step import amp_settings, pixel_cross_entropy, segmentation_loss


def test_poly_lr_hand_checked() -> None:
    # lr = base · (1 − it/max)^0.9; 0.5 ** 0.9 = exp(0.9 · ln 0.5) = 0.535886731...
    assert poly_lr(0.007, 0, 30000) == 0.007
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5358867313, rel=1e-9)
    assert poly_lr(0.007, 15000, 30000) == pytest.approx(0.0037512071, rel=1e-8)
    assert poly_lr(0.001, 29999, 30000) == pytest.approx(0.001 * (1 / 30000) ** 0.9)
    assert poly_lr(0.007, 30000, 30000) == 0.0
    assert poly_lr(1.0, 25, 100, power=1.0) == 0.75  # power 1 is the linear schedule
    lrs = [poly_lr(0.1, i, 10) for i in range(11)]
    assert all(a > b for a, b in itertools.pairwise(lrs))  # strictly decreasing
    for bad in (-1, 101):
        with pytest.raises(ValueError):
            poly_lr(0.1, bad, 100)


def test_set_lr_changes_every_group() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=1.0, momentum=0.9)
    set_lr(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]


def test_weight_decay_only_on_conv_weights() -> None:
    model = build_model("deeplabv3_tiny", num_classes=3)
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {id(p) for p in decay["params"]} == {id(m.weight) for m in convs}
    expected = {id(p) for p in model.parameters()} - {id(m.weight) for m in convs}
    assert {id(p) for p in no_decay["params"]} == expected
    # the classifier bias and every BN scale/shift are among them
    assert id(model.head.classifier.bias) in expected
    assert all(id(bn.weight) in expected for bn in batch_norms(model))


def test_classifier_lr_multiplier_boosts_only_the_classifier_and_aux_head() -> None:
    model = build_model("deeplabv3_tiny", num_classes=3, aux_head=True)
    plain = param_groups(model, 1e-4)
    assert len(plain) == 2  # multiplier 1: the same two groups (resumable optimizer state)
    groups = param_groups(model, 1e-4, classifier_lr_multiplier=100.0)
    boosted_decay, boosted = groups[2:]
    names = {id(p): n for n, p in model.named_parameters()}
    boosted_names = sorted(names[id(p)] for g in (boosted_decay, boosted) for p in g["params"])
    assert boosted_names == sorted(
        n for n in names.values() if n.startswith(("head.classifier.", "aux_head."))
    )
    assert [names[id(p)] for p in boosted_decay["params"]] == [
        "head.classifier.weight", "aux_head.0.weight", "aux_head.4.weight",
    ]  # fmt: skip
    assert (boosted_decay["weight_decay"], boosted["weight_decay"]) == (1e-4, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(names)  # every parameter once
    optimizer = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    set_lr(optimizer, 0.002)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.002, 0.2, 0.2]


def test_bn_momentum_is_set_on_every_bn() -> None:
    model = build_model("deeplabv3_tiny", num_classes=3, aux_head=True)
    count = set_bn_momentum(model, 0.0003)
    every = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert count == len(every) > 10
    assert all(m.momentum == 0.0003 for m in every)


def test_frozen_bn_changes_nothing_while_convs_learn() -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=3)
    frozen = batch_norms(model)
    assert freeze_bn(model) == len(frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    bn_eval(frozen)
    optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = segmentation_loss(model(torch.randn(2, 3, 48, 48)), torch.randint(0, 3, (2, 48, 48)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    bn_keys = {
        f"{name}.{k}" for name, m in model.named_modules() if m in frozen for k in m.state_dict()
    }
    assert bn_keys and all(torch.equal(before[k], after[k]) for k in bn_keys)
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])


def test_loss_ignores_255_and_upsamples_logits_to_the_labels() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 10.0  # confident "class 1" everywhere
    target = torch.full((1, 4, 4), 255)
    target[0, 0, 0] = 1
    target[0, 3, 3] = 0
    # at 4×4 the logits are bilinearly upsampled (still constant); two labelled pixels
    expected = (
        nn.functional.cross_entropy(torch.tensor([[0.0, 10, 0]]), torch.tensor([1]))
        + nn.functional.cross_entropy(torch.tensor([[0.0, 10, 0]]), torch.tensor([0]))
    ) / 2
    assert pixel_cross_entropy(logits, target) == pytest.approx(float(expected), rel=1e-6)
    assert pixel_cross_entropy(logits, torch.full((1, 4, 4), 255)) == 0.0  # nothing labelled
    aux = {"out": logits, "aux": torch.zeros(1, 3, 4, 4)}
    total = segmentation_loss(aux, target, aux_weight=0.4)
    assert float(total) == pytest.approx(float(expected) + 0.4 * math.log(3), rel=1e-6)


def test_mixed_precision_is_chosen_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_settings(cpu, None) == (None, None)  # the default CPU path: plain float32
    assert amp_settings(cpu, False) == (None, None)
    with pytest.raises(ConfigError, match=r"mixed precision \(--amp\) needs a CUDA device"):
        amp_settings(cpu, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert amp_settings(cuda, None) == (torch.bfloat16, None)  # bf16 needs no loss scaling
    assert amp_settings(cuda, False) == (None, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on a machine without a GPU
        dtype, scaler = amp_settings(cuda, True)
    assert dtype == torch.float16 and isinstance(scaler, torch.amp.GradScaler)


def test_a_run_directory_under_home_is_found_with_a_tilde(tmp_path, monkeypatch) -> None:
    from deeplabcli.config import TrainConfig
    from deeplabcli.training.run_dir import read_run_config, start_run_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    config = TrainConfig(out="~/runs/x", iters=7)
    start_run_dir(config)
    assert (tmp_path / "runs" / "x").is_dir()
    assert read_run_config("~/runs/x").iters == 7
