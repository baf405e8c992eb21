"""Options shared by several commands: the model reference and the inference options.

:func:`inference_options` adds ``--os``, ``--scales``, ``--flip``, ``--device``,
``--batch-size``, ``--streams``, ``--backend``, ``--amp``, ``--tile`` and ``--tile-overlap`` to a command
and hands them to it as one ``inference`` mapping of :class:`~deeplabcli.config.InferenceConfig`
fields, so predict and eval declare them once and pass them on whole
(``PredictConfig(**inference, ...)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..config import BACKENDS, InferenceConfig

#: The CLI's names of the InferenceConfig fields it sets (parameter name → field name).
INFERENCE_PARAMS = (
    "output_stride", "scales", "flip", "device", "batch_size", "streams", "backend", "tile",
    "tile_overlap", "amp",
)  # fmt: skip


class ScalesType(click.ParamType):
    """Comma-separated positive numbers: ``0.5,0.75,1,1.25``."""

    name = "scales"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            scales = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers, e.g. 0.5,1,1.5.")
        if any(not s > 0 for s in scales):
            self.fail(f"{value!r} has a scale that is not positive. Use numbers above 0.")
        return scales


def model_option(default_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--model REF`` (parameter ``model_ref``); ``default_help`` says what None means."""
    return click.option(
        "--model",
        "model_ref",
        metavar="REF",
        help="Model card name, checkpoint folder, .safetensors/.pth/.tflite file, exported "
        f".onnx/.xml file (deeplab export) or Hub repo ({default_help}).",
    )


def inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the inference options to ``command``, which receives them as ``inference``: a dict
    of InferenceConfig fields (``output_stride`` already an int or None)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        inference = {name: kwargs.pop(name) for name in INFERENCE_PARAMS}
        if inference["output_stride"] is not None:
            inference["output_stride"] = int(inference["output_stride"])
        if inference["amp"] is None:  # the command's own default (predict: fast, eval: exact)
            del inference["amp"]
        return command(*args, inference=inference, **kwargs)

    options = [
        click.option(
            "--os",
            "output_stride",
            type=click.Choice(["8", "16"]),
            default=None,
            help="Output stride to run the network at (default: the model's own).",
        ),
        click.option(
            "--scales",
            type=ScalesType(),
            default="1",
            show_default=True,
            help="Input scales whose class probabilities are averaged, "
            "e.g. 0.5,0.75,1,1.25,1.5,1.75.",
        ),
        click.option("--flip", is_flag=True, help="Also average left-right flipped inputs."),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
            help="auto = CUDA when available.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Images per forward pass (images of equal network input size are batched).",
        ),
        click.option(
            "--streams",
            type=click.IntRange(min=1),
            default=None,
            help="CPU: batches that run side by side, sharing the threads (default: 2 for small "
            "models such as MobileNetV2 at batch size 1, whose layers cannot keep many threads "
            "busy, on torch and ONNX Runtime; else 1).",
        ),
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default="auto",
            show_default=True,
            help="Where the network runs. auto: the fastest installed for the device (on a CPU "
            "ONNX Runtime, then OpenVINO, then torch; on CUDA torch). A model that is not an "
            "exported .onnx/.xml runs on a runtime after one export into the cache "
            "($DEEPLAB_EXPORT_CACHE, default ~/.cache/deeplabcli/exported).",
        ),
        click.option(
            "--amp/--no-amp",
            default=None,
            help="Autocast the torch network to float16 on CUDA, bfloat16 on a CPU. Default: "
            "predict on for CUDA and, on CPUs with native bfloat16, for large models (ResNets); "
            "eval off. --no-amp: float32.",
        ),
        click.option(
            "--tile",
            type=click.IntRange(min=1),
            default=None,
            metavar="SIZE",
            help="Keep images at their own resolution and run those larger than SIZE pixels in "
            "overlapping SIZE×SIZE windows (--batch-size windows per pass), e.g. the model's "
            "input size. Default: whole images.",
        ),
        click.option(
            "--tile-overlap",
            type=click.FloatRange(min=0, max=1, max_open=True),
            default=InferenceConfig.tile_overlap,
            show_default=True,
            metavar="FRACTION",
            help="With --tile: how much neighbouring windows overlap, a fraction of SIZE in [0, 1).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
