"""Model surgery: the one strict state-dict loader, and class-count changes.

Every place that puts weights into a model (checkpoints, converters, backbone initialisation,
fine-tuning for other classes) goes through :func:`load_strict`, so a missing, unexpected or
mis-shaped tensor is always the same readable error and nothing is silently left random.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import DeeplabError, ModelLoadError
from .deeplabv3 import DeepLabV3

#: The only tensors a class-count change may re-initialise.
CLASSIFIER_PREFIXES = ("head.classifier.", "aux_head.")


def state_dict_problems(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, optional: tuple[str, ...] = ()
) -> str:
    """What keeps ``state_dict`` from loading into ``module`` strictly, in one line
    (``"missing a, b; unexpected c; shape mismatch d (4,) vs (3,)"``), or ``""`` when it fits.
    Tensors whose names start with one of ``optional`` may be missing."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state_dict and not k.startswith(optional))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    return "; ".join(
        f"{label} {_short(items)}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        )
        if items
    )


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    error: Callable[[str], DeeplabError],
    optional: tuple[str, ...] = (),
    source: str = "the weights",
) -> None:
    """Load ``state_dict`` into ``module``; any tensor that is missing (unless its name starts
    with one of ``optional``), unexpected or of another shape raises ``error(problems)``, with
    the problems listed in one line (see :func:`state_dict_problems`). Floating-point tensors
    holding NaN or ±Inf raise :class:`ModelLoadError` naming them and ``source``."""
    problems = state_dict_problems(module, state_dict, optional=optional)
    if problems:
        raise error(problems)
    broken = non_finite_tensors(state_dict)
    if broken:
        raise ModelLoadError(
            f"{source} hold NaN or infinite values in {_short(broken)}. The weights are damaged "
            "or come from a training run that diverged; use another checkpoint."
        )
    module.load_state_dict(dict(state_dict), strict=not optional)


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names (sorted) of the floating-point tensors of ``state_dict`` with a NaN or ±Inf."""
    return sorted(
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    )


def adapt_classes(
    model: DeepLabV3,
    class_names: Sequence[str],
    *,
    aux_head: bool | None = None,
    reinit: bool = False,
) -> tuple[DeepLabV3, list[str]]:
    """``model`` rebuilt for ``class_names`` (and with an auxiliary head if ``aux_head``).

    Tensors whose name and shape are unchanged are copied (with ``reinit``, all but the
    classifier and aux head); the classifier and aux-head tensors that no longer fit (or are
    new, or ``reinit`` asks for) keep their fresh initialisation (drawn from the global torch
    generator). Returns the new model and the names of the re-initialised tensors in state-dict
    order (empty when nothing changed: then ``model`` itself is returned, with the new class
    names).
    """
    config = model.config
    changes: dict[str, Any] = {"num_classes": len(class_names), "class_names": tuple(class_names)}
    if aux_head is not None and aux_head != config.aux_head:
        changes["aux_head"] = aux_head
    new_config = config.replace(**changes)
    same = new_config.num_classes == config.num_classes and new_config.aux_head == config.aux_head
    if same and not reinit:
        model.config = new_config
        return model, []
    adapted = DeepLabV3(new_config, provenance=model.provenance)
    adapted.to(next(model.parameters()).device)
    old_state, new_state = model.state_dict(), adapted.state_dict()
    kept = {
        k: v
        for k, v in old_state.items()
        if k in new_state
        and v.shape == new_state[k].shape
        and not (reinit and k.startswith(CLASSIFIER_PREFIXES))
    }
    fresh = [k for k in new_state if k not in kept]
    stray = [k for k in fresh if not k.startswith(CLASSIFIER_PREFIXES)]
    if stray:  # only possible if the architecture changed, which adapt_classes never does
        raise ModelLoadError(
            f"adapting the model would re-initialise {', '.join(stray)}. "
            "Use a checkpoint of the same architecture."
        )
    with torch.no_grad():
        for key, value in kept.items():
            new_state[key].copy_(value)
    return adapted, fresh


def describe_tensors(model: nn.Module, names: Sequence[str]) -> str:
    """``head.classifier.weight (4, 256, 1, 1), head.classifier.bias (4,)``."""
    state = model.state_dict()
    return ", ".join(f"{name} {tuple(state[name].shape)}" for name in names)


def _short(items: list[str], limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
