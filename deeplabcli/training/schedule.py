"""The paper's optimisation recipe as small pure pieces: poly LR, parameter groups, BN settings.

- Learning rate: "poly" (paper Sec. 4.1), ``lr(it) = base_lr · (1 − it / max_iters) ** 0.9``,
  a pure function of the iteration (no scheduler object whose state could drift).
- Weight decay: on convolution (and linear) weights only, as TF-slim's DeepLab does; batch-norm
  scales/shifts and biases are not decayed.
- A learning-rate multiplier for the classifier (TF DeepLab's ``last_layer_gradient_multiplier``)
  for training a fresh classifier on features that must move slowly.
- Batch norm: momentum 0.0003 (TF's decay 0.9997) on every BN module; "frozen" BN (the paper's
  second stage) keeps its running statistics *and* its affine parameters fixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..models.surgery import CLASSIFIER_PREFIXES

#: Batch-norm module types (plain and synchronised; the CPU SyncBN subclasses BatchNorm2d).
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float = 0.9) -> float:
    """The learning rate for ``iteration`` (0-based) of ``max_iters``: ``base_lr · (1 −
    iteration / max_iters) ** power``, so ``base_lr`` at 0 and 0 at ``max_iters``.

    >>> poly_lr(0.007, 0, 30000)
    0.007
    >>> round(poly_lr(0.01, 50, 100), 6)  # 0.01 * 0.5 ** 0.9
    0.005359
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be positive, got {max_iters}")
    if not 0 <= iteration <= max_iters:
        raise ValueError(f"iteration {iteration} is outside 0..{max_iters}")
    return base_lr * (1.0 - iteration / max_iters) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr`` (times the group's
    ``lr_multiplier`` where it has one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_multiplier", 1.0)


def param_groups(
    model: nn.Module, weight_decay: float, *, classifier_lr_multiplier: float = 1.0
) -> list[dict[str, Any]]:
    """SGD groups over the trainable parameters: conv/linear weights with ``weight_decay``,
    everything else (BN scale/shift, biases) without. Frozen parameters are left out. With a
    ``classifier_lr_multiplier`` other than 1, the classifier and the aux head (the tensors a
    class-count change re-initialises) get two more groups of that ``lr_multiplier``."""
    groups = {(decays, boost): [] for decays in (True, False) for boost in (False, True)}
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            decays = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            boost = classifier_lr_multiplier != 1.0 and f"{module_name}.{name}".startswith(
                CLASSIFIER_PREFIXES
            )
            groups[decays, boost].append(parameter)
    result = [
        {"params": groups[True, False], "weight_decay": weight_decay},
        {"params": groups[False, False], "weight_decay": 0.0},
    ]
    if classifier_lr_multiplier != 1.0:
        result += [
            {"params": groups[decays, True], "weight_decay": weight_decay if decays else 0.0,
             "lr_multiplier": classifier_lr_multiplier}
            for decays in (True, False)
        ]  # fmt: skip
    return result


def batch_norms(model: nn.Module) -> list[nn.Module]:
    """Every batch-norm module of ``model`` (in ``modules()`` order)."""
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set ``momentum`` (PyTorch's, i.e. 1 − TF decay) on every BN module; returns how many."""
    modules = batch_norms(model)
    for module in modules:
        module.momentum = momentum
    return len(modules)


def freeze_bn(model: nn.Module) -> int:
    """Freeze every BN module: affine parameters stop learning (``requires_grad=False``) and
    :func:`bn_eval` must be applied after each ``model.train()``. Returns how many were frozen."""
    modules = batch_norms(model)
    for module in modules:
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(False)
    return len(modules)


def bn_eval(modules: Iterable[nn.Module]) -> None:
    """Put ``modules`` (frozen BNs) in eval mode: they normalise with their running statistics
    and never update them."""
    for module in modules:
        module.eval()
