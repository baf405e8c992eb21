"""``deeplab train``, ``deeplab finetune`` and ``deeplab bootstrap``.

Options are read in three layers: the command's defaults (the paper's first stage for
``train``, its second stage for ``finetune``), then ``--config FILE`` (TOML: a ``[train]`` or
``[finetune]`` table, or top-level keys named like TrainConfig fields), then the options given
on the command line or by their environment variable (``DEEPLAB_DATA_ROOT`` for
``--data-root``). With ``--resume`` the first layer is the run's saved settings instead, so
``deeplab train --out RUN --resume`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..config import HARD_CLASSES, TrainConfig
from ..config.constants import default_workers
from ..config.fields import check_fields
from ..data import DATASET_KINDS
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: click parameter name → TrainConfig field, where they differ
FIELD_NAMES = {"model_arch": "arch", "os": "output_stride"}
#: the tables a --config file may hold, one per command
CONFIG_TABLES = ("train", "finetune")
#: click parameters that are not TrainConfig fields
NOT_FIELDS = ("config", "quiet", "ref")
_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
_DEFAULTS = TrainConfig.__dataclass_fields__


class IntList(click.ParamType):
    """``1,2,4`` → ``(1, 2, 4)``."""

    name = "N,N,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (tuple, list)):
            return tuple(int(v) for v in value)
        try:
            items = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            items = ()
        if not items or any(v < 1 for v in items):
            self.fail(f"{value!r} is not a list of positive integers, e.g. 1,2,4.", param, ctx)
        return items


def _default(name: str) -> Any:
    field = _DEFAULTS[name]
    return field.default_factory if field.default is dataclasses.MISSING else field.default


def _options(specs: list[Callable[[Callable], Callable]]) -> Callable[[Callable], Callable]:
    def apply(function: Callable) -> Callable:
        for spec in reversed(specs):
            function = spec(function)
        return function

    return apply


def _data_options(stage: dict[str, Any]) -> list[Callable[[Callable], Callable]]:
    return [
        click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML file of options (flags override it)."),
        click.option("--dataset", type=click.Choice(DATASET_KINDS), default="voc", show_default=True),
        click.option("--data-root", envvar="DEEPLAB_DATA_ROOT", show_envvar=True, help="VOCdevkit (or VOC2012) or a custom data set folder."),
        click.option("--split", default=stage.get("split", _default("split")), show_default=True, help="Split name or list file (e.g. from `deeplab bootstrap`)."),
        click.option("--num-classes", type=click.IntRange(min=1), help="Class count; re-initialises the classifier of an init model with another count."),
        click.option("--reinit-classifier", is_flag=True, help="Re-initialise the init model's classifier (and aux head) even when its classes match."),
    ]  # fmt: skip


def _optim_options(stage: dict[str, Any]) -> list[Callable[[Callable], Callable]]:
    def opt(flag: str, field: str, kind: Any, text: str) -> Callable[[Callable], Callable]:
        return click.option(
            flag, type=kind, default=stage.get(field, _default(field)), show_default=True, help=text
        )

    return [
        click.option("--os", type=click.IntRange(min=1), default=stage.get("output_stride", 16), show_default=True, help="Output stride to train at."),
        opt("--crop-size", "crop_size", click.IntRange(min=1), "Square training crop (pixels)."),
        opt("--batch-size", "batch_size", click.IntRange(min=1), "Images per iteration over all processes."),
        opt("--accumulate", "accumulate", click.IntRange(min=1), "Micro-batches per step: each process sums the gradients of N micro-batches of batch / (processes x N) images. With BN frozen the step is unchanged; trained BN normalises each micro-batch alone, a smaller BN batch than the recipe's."),
        opt("--lr", "lr", click.FloatRange(min=0, min_open=True), "Base learning rate (poly schedule, power 0.9)."),
        opt("--classifier-lr-mult", "classifier_lr_mult", click.FloatRange(min=0, min_open=True), "Learning-rate multiplier of the classifier and aux head (TF DeepLab's last_layer_gradient_multiplier)."),
        opt("--iters", "iters", click.IntRange(min=1), "Training iterations."),
        opt("--momentum", "momentum", click.FloatRange(0, 1, max_open=True), "SGD momentum."),
        opt("--weight-decay", "weight_decay", click.FloatRange(min=0), "L2 on conv weights."),
        opt("--bn-momentum", "bn_momentum", click.FloatRange(0, 1), "BN momentum (1 - TF decay 0.9997)."),
        click.option("--freeze-bn/--train-bn", default=stage.get("freeze_bn", False), show_default=True, help="Keep BN statistics and parameters fixed."),
        click.option("--aux-loss", is_flag=True, help="Train an auxiliary FCN head on block3 (weight 0.4)."),
        click.option("--amp/--no-amp", default=None, help="Mixed precision for the network; the loss is float32 either way. --no-amp: strictly float32 [default: on with CUDA]."),
        click.option("--deterministic", is_flag=True, help="Deterministic algorithms (no cuDNN benchmark, CUBLAS_WORKSPACE_CONFIG=:4096:8): identical runs give identical weights on CUDA too."),
    ]  # fmt: skip


def _run_options() -> list[Callable[[Callable], Callable]]:
    return [
        click.option("--val-split", help="Evaluate mIoU on this split during training."),
        click.option("--val-every", type=click.IntRange(min=1), default=_default("val_every"), show_default=True),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--workers", type=click.IntRange(min=0), default=_default("workers"), show_default="the CPUs available, at most 4", help="Data loading processes."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ..."),
        click.option("--out", default=_default("out"), show_default=True, type=click.Path(file_okay=False), help="Run directory (a checkpoint directory)."),
        click.option("--save-every", type=click.IntRange(min=1), default=_default("save_every"), show_default=True, help="Checkpoint every N iterations."),
        click.option("--log-every", type=click.IntRange(min=1), default=_default("log_every"), show_default=True, help="metrics.jsonl line every N iterations."),
        click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."),
        click.option("--overwrite", is_flag=True, help="Replace a different run found in --out."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages."),
    ]  # fmt: skip


def read_config_file(path: str, section: str) -> dict[str, Any]:
    """The options in a TOML file: its top-level keys, with its ``[section]`` table over them
    (the other command's table is checked too, but not used). Keys are TrainConfig fields or
    option names (``crop-size``, ``os``, ``model-arch``). Every value is type-checked; a table
    or key that no command reads is an error naming it."""
    where = f"config file {path}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {path} ({error.strerror}). Check the path."
        ) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{where} is not valid TOML ({error}). Fix the file.") from None
    tables = [k for k, v in data.items() if isinstance(v, dict)]
    unknown = [t for t in tables if t not in CONFIG_TABLES]
    if unknown:
        raise ConfigError(
            f"{where} has a table [{unknown[0]}] that no command reads. Use "
            f"{' or '.join(f'[{t}]' for t in CONFIG_TABLES)}, or keys at the top level."
        )
    layers = {"": {k: v for k, v in data.items() if k not in tables}}
    layers.update({f"{t}.": data[t] for t in tables})
    values: dict[str, Any] = {}
    for prefix, table in layers.items():
        keys = ((str(k).replace("-", "_"), v) for k, v in table.items())
        named = {FIELD_NAMES.get(k, k): v for k, v in keys}
        checked = check_fields(TrainConfig, named, where=where, prefix=prefix)
        if prefix in ("", f"{section}."):
            values.update(checked)
    return values


def build_config(ctx: click.Context, stage: dict[str, Any], section: str) -> TrainConfig:
    """Defaults (``stage`` over TrainConfig's) ← ``--config`` file ← options given; with
    ``--resume`` the run's saved settings replace the defaults. A value the file makes invalid
    is reported with the file's name."""
    from ..training.run_dir import read_run_config

    params = ctx.params
    given = {
        FIELD_NAMES.get(k, k): v
        for k, v in params.items()
        if k not in NOT_FIELDS and ctx.get_parameter_source(k) in _GIVEN
    }
    path = params.get("config")
    from_file = read_config_file(path, section) if path else {}
    where = f"config file {path}" if path else "command-line options"
    if given.get("resume") or from_file.get("resume"):
        out = given.get("out") or from_file.get("out") or _default("out")
        base = read_run_config(out).to_dict()
        given = {**given, "resume": True}
    else:
        base = stage
    try:
        return TrainConfig.from_dict({**base, **from_file, **given}, where=where)
    except ConfigError as error:
        if from_file and _valid({**base, **given}):  # the file's values make it invalid
            raise ConfigError(f"{where}: {error}") from None
        raise


def _valid(values: dict[str, Any]) -> bool:
    try:
        TrainConfig.from_dict(values)
    except ConfigError:
        return False
    return True


def _finish(result: Any) -> None:
    if not result.main:
        return
    parts = [f"Trained {result.iteration} iterations"]
    if result.loss is not None:
        parts.append(f"loss {result.loss:.4f}")
    if result.val_miou is not None:
        parts.append(f"val mIoU {result.val_miou:.4f}")
    click.echo(f"{', '.join(parts)}. Checkpoint: {result.out} (use it with --model {result.out}).")


@click.command()
@_options(_data_options({}))
@click.option(
    "--model-arch",
    default="deeplabv3_resnet101",
    show_default=True,
    help="Architecture, e.g. deeplabv3_resnet50, deeplabv3_mobilenetv2.",
)
@click.option("--multi-grid", type=IntList(), help="Unit rates of block4+ [default: 1,2,4].")
@click.option("--aspp-rates", type=IntList(), help="ASPP rates at OS 16 [default: 6,12,18].")
@click.option(
    "--image-pooling/--no-image-pooling",
    default=None,
    help="ASPP image-level features [default: on].",
)
@click.option("--cascade", type=click.IntRange(4, 7), help="Last ResNet block, 4..7 [default: 4].")
@click.option(
    "--init",
    default="imagenet",
    show_default=True,
    help="imagenet (the backbone's ImageNet card), none, or a model reference.",
)
@_options(_optim_options({}))
@_options(_run_options())
@click.pass_context
def train(ctx: click.Context, **_: Any) -> None:  # fmt: skip
    """Train DeepLabv3 with the paper's recipe (stage 1: trainaug, OS 16, lr 0.007, 30K its).

    \b
      deeplab train --data-root VOCdevkit --out runs/r101
      deeplab train --out runs/r101 --resume
      torchrun --nproc-per-node 8 -m deeplabcli train --data-root VOCdevkit --out runs/r101
    """
    from ..training.loop import train as run_training

    config = build_config(ctx, {}, "train")
    _finish(run_training(config, progress=not ctx.params["quiet"]))


@click.command()
@click.argument("ref")
@_options(_data_options({"split": "trainval"}))
@_options(_optim_options({"output_stride": 8, "lr": 0.001, "freeze_bn": True}))
@_options(_run_options())
@click.pass_context
def finetune(ctx: click.Context, ref: str, **_: Any) -> None:
    """Fine-tune REF with the paper's stage 2: BN frozen, OS 8, lr 0.001, trainval, 30K its.

    REF is any model reference (run directory, checkpoint, card name, file, Hub repo). For a
    data set with another class count, give --num-classes N (N = its classes): the classifier
    is re-initialised.

    \b
      deeplab finetune runs/r101 --data-root VOCdevkit --out runs/r101-ft
    """
    from ..training.loop import train as run_training
    from ..training.stage2 import STAGE2_DEFAULTS

    config = build_config(ctx, {**STAGE2_DEFAULTS, "init": ref}, "finetune")
    _finish(run_training(config.replace(init=ref), progress=not ctx.params["quiet"]))


@click.command()
@click.option("--dataset", type=click.Choice(DATASET_KINDS), default="voc", show_default=True)
@click.option(
    "--data-root",
    envvar="DEEPLAB_DATA_ROOT",
    show_envvar=True,
    help="VOCdevkit (or VOC2012) or a custom data set.",
)
@click.option("--split", default="train", show_default=True, help="Split name or list file.")
@click.option(
    "--classes",
    default=",".join(HARD_CLASSES),
    show_default=True,
    help="Comma-separated hard classes.",
)
@click.option(
    "--copies",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Times each hard image appears.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="List to write [default: <split>_bootstrap.txt beside the split].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=default_workers,
    show_default="the CPUs available, at most 4",
    help="Threads reading masks.",
)
def bootstrap(dataset: str, data_root: str | None, split: str, classes: str, copies: int, output: str | None, workers: int) -> None:  # fmt: skip
    """Duplicate images that contain hard classes in a training list (paper Sec. 4.4).

    \b
      deeplab bootstrap --data-root VOCdevkit --split trainaug
      deeplab train --data-root VOCdevkit --split trainaug_bootstrap ...
    """
    from ..data.bootstrap import bootstrap_split
    from ..progress import message, print_table, progress_bar

    with progress_bar(None, "reading masks", unit="masks") as bar:
        result = bootstrap_split(
            data_root, split, classes.split(","), copies=copies, output=output,
            dataset=dataset, workers=workers, on_progress=bar.advance, on_total=bar.set_total,
        )  # fmt: skip
    rows = [(name, count) for name, count in result.images_per_class.items()]
    rows.append(("any of them", result.hard_entries))
    print_table("Images per hard class", ["class", "images"], rows, justify=["left", "right"])
    message(
        f"{result.original_length} entries → {result.new_length} "
        f"({result.hard_entries} hard images × {result.copies}). Train with --split {result.output}"
    )
    click.echo(str(result.output))
