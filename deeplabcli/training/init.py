"""The model a training run starts from: built from the config and initialised by ``--init``.

- ``imagenet`` (default): the architecture's ImageNet backbone card (``resnet101-imagenet``...),
  head and cascaded blocks (block5+) random;
- ``none``: everything random (seeded);
- a backbone card or an ImageNet ResNet weights file: as ``imagenet``, from that reference;
- any other model reference (checkpoint directory, card, file, Hub repo): the whole model, with
  its own architecture; a different class count needs ``num_classes`` and re-initialises only
  the classifier (:func:`~deeplabcli.models.surgery.adapt_classes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig, TrainConfig
from ..distributed import World
from ..errors import ClassCountMismatchError, ConfigError, ModelLoadError
from ..models import DeepLabV3, adapt_classes, build_model, describe_tensors, load_strict
from ..weights.cards import find_card
from ..weights.formats import PICKLE_SUFFIXES, layout, read_weights
from .memory import check_training_memory
from .schedule import batch_norms, freeze_bn, set_bn_momentum
from .syncbn import convert_sync_batchnorm

DEFAULT_ARCH = "deeplabv3_resnet101"
#: A learning rate that fine-tunes BN-folded models (Google's TFLite exports) without harm.
FOLDED_BN_LR = 1e-5
#: TrainConfig architecture fields → the option that sets them (for error messages).
ARCH_OPTIONS = {
    "arch": "--model-arch",
    "multi_grid": "--multi-grid",
    "aspp_rates": "--aspp-rates",
    "image_pooling": "--image-pooling/--no-image-pooling",
    "cascade": "--cascade",
}


def is_backbone_init(init: str) -> bool:
    """True when ``init`` names backbone weights (not a whole model)."""
    if init == "imagenet":
        return True
    path = Path(init).expanduser()
    if path.is_file() and path.suffix.lower() in (*PICKLE_SUFFIXES, ".safetensors"):
        return layout(read_weights(path)) == "resnet"  # an ImageNet ResNet, not a model
    if path.exists():
        return False
    card = find_card(init)
    return card is not None and not card.is_model


def training_model(
    config: TrainConfig, class_names: Sequence[str], *, say: Callable[[str], None]
) -> DeepLabV3:
    """The initialised model for ``config`` and a data set with ``class_names``, in train mode
    on the CPU, at ``config.output_stride``. Messages about the initialisation go to ``say``."""
    if config.num_classes is not None and config.num_classes != len(class_names):
        raise ConfigError(
            f"--num-classes {config.num_classes} does not match the {len(class_names)} classes "
            f"of the data set. Give --num-classes {len(class_names)} or leave it out."
        )
    torch.manual_seed(config.seed)
    if config.init == "none" or is_backbone_init(config.init):
        model = build_model(config.arch or DEFAULT_ARCH, **_arch_overrides(config, class_names))
        if config.init != "none":
            _load_backbone(model, config.init, say)
    else:
        model = _from_checkpoint(config, class_names, say)
    return model.train()


def _arch_overrides(config: TrainConfig, class_names: Sequence[str]) -> dict[str, object]:
    overrides: dict[str, object] = {
        "num_classes": len(class_names),
        "class_names": tuple(class_names),
        "output_stride": config.output_stride,
    }
    if config.aux_loss:
        overrides["aux_head"] = True
    for name in ("multi_grid", "aspp_rates", "image_pooling", "cascade"):
        if getattr(config, name) is not None:
            overrides[name] = getattr(config, name)
    return overrides


def _load_backbone(model: DeepLabV3, init: str, say: Callable[[str], None]) -> None:
    from ..weights.resolve import load_backbone_weights

    backbone = model.config.backbone
    ref = init
    if init == "imagenet":
        ref = f"{backbone}-imagenet"
        if find_card(ref) is None:
            raise ConfigError(
                f"no ImageNet weights are published for the {backbone} backbone of "
                f"{model.config.arch}. Pass --init none to start from random weights, or "
                "--init REF."
            )
    state = load_backbone_weights(ref)
    cascaded = tuple(f"layer{i}." for i in range(5, 8))  # the paper's block5..7: no ImageNet
    load_strict(
        model.backbone,
        state,
        optional=cascaded,
        source=f"the backbone weights {ref}",
        error=lambda problems: ModelLoadError(
            f"{ref} does not fit the {backbone} backbone ({problems}). "
            f"Pass backbone weights of {backbone}, or --init none."
        ),
    )
    say(f"Initialised the {backbone} backbone from {ref}; the head starts from random weights.")


def _from_checkpoint(
    config: TrainConfig, class_names: Sequence[str], say: Callable[[str], None]
) -> DeepLabV3:
    from ..weights.resolve import load_model

    model = load_model(config.init)
    _check_architecture(config, model.config)
    theirs = model.config.num_classes
    if theirs != len(class_names) and config.num_classes is None:
        raise ClassCountMismatchError(
            f"the model {config.init} has {theirs} classes but the data set has "
            f"{len(class_names)}. Pass --num-classes {len(class_names)} to re-initialise its "
            "classifier for this data set."
        )
    aux = model.config.aux_head or config.aux_loss
    model, fresh = adapt_classes(model, class_names, aux_head=aux, reinit=config.reinit_classifier)
    if fresh:
        why = (
            f"for {len(class_names)} classes ({config.init} has {theirs})"
            if theirs != len(class_names)
            else f"the classifier of {config.init} (--reinit-classifier)"
        )
        say(
            f"Re-initialised {why}: {describe_tensors(model, fresh)}. "
            "Every other tensor was loaded."
        )
    if model.config.folded_bn and config.lr > FOLDED_BN_LR:
        say(
            f"Note: {config.init} has batch norm folded into its convolutions, which makes each "
            f"SGD step act far larger than with BN layers; if the loss rises, lower --lr "
            f"(e.g. {FOLDED_BN_LR:g})."
        )
    if model.output_stride != config.output_stride:
        model.set_output_stride(config.output_stride)
    return model


def _check_architecture(config: TrainConfig, theirs: ModelConfig) -> None:
    for name, option in ARCH_OPTIONS.items():
        given = getattr(config, name)
        if given is not None and given != getattr(theirs, name):
            raise ConfigError(
                f"{option} {_show(given)} differs from the {_show(getattr(theirs, name))} of "
                f"{config.init}: a checkpoint brings its own architecture. Leave {option} out."
            )


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def prepare_for_training(
    model: DeepLabV3, config: TrainConfig, world: World, device: torch.device
) -> tuple[DeepLabV3, list[nn.Module]]:
    """Batch norm as the config says (momentum on every BN; frozen, or synchronised over the
    processes of a distributed run), the model on ``device`` (channels-last on CUDA), and a
    memory check for the crop and micro-batch. Returns the model and its frozen BNs."""
    micro_batch = config.batch_size // world.size // config.accumulate
    set_bn_momentum(model, config.bn_momentum)
    if config.freeze_bn:
        freeze_bn(model)
    frozen = batch_norms(model) if config.freeze_bn else []
    trainable_bn = bool(batch_norms(model)) and not config.freeze_bn
    if trainable_bn and micro_batch * world.size < 2:
        if config.accumulate > 1:
            raise ConfigError(
                f"batch norm cannot train on one image per micro-batch (--accumulate "
                f"{config.accumulate} splits each step into single images, and the "
                "image-pooling branch sees one value per channel). Use a smaller --accumulate, "
                "or --freeze-bn."
            )
        raise ConfigError(
            "batch norm cannot train on one image per step (the image-pooling branch sees "
            "one value per channel). Use --batch-size 2 or more, or --freeze-bn."
        )
    if trainable_bn and world.distributed:
        model = convert_sync_batchnorm(model, device)  # type: ignore[assignment]
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = not config.deterministic  # timing picks kernels
    check_training_memory(
        model, config.crop_size, micro_batch, device, accumulate=config.accumulate
    )
    return model, frozen
