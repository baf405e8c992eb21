"""``deeplab eval``: mIoU and per-class IoU of a model on VOC or a custom data set."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import click

from ..config.constants import default_workers
from ..data import DATASET_KINDS
from .options import inference_options, model_option

if TYPE_CHECKING:
    from ..evaluation.result import EvalResult

#: seconds a rank other than 0 waits before reporting an error itself (see eval_command)
RANK_ERROR_GRACE_S = 5.0


@click.command("eval")
@click.option(
    "--dataset",
    type=click.Choice(DATASET_KINDS),
    default="voc",
    show_default=True,
    help="voc: PASCAL VOC 2012 layout; folder: images/, masks/ and classes.txt.",
)
@click.option(
    "--data-root",
    metavar="PATH",
    envvar="DEEPLAB_DATA_ROOT",
    show_envvar=True,
    help="VOCdevkit (or VOC2012) folder, or the custom data set folder.",
)
@click.option(
    "--split",
    metavar="NAME",
    help="Split name or list file (default: val for voc, all for folder).",
)
@model_option("default: the default model card")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=lambda: default_workers(2),
    show_default="the CPUs available, at most 2",
    help="Background processes that read images (0 = read in the main process).",
)
@inference_options
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
@click.option(
    "--report",
    metavar="DIR",
    help="Write metrics.json, CSVs, charts and the worst images with overlays into DIR.",
)
@click.option(
    "--worst",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="How many lowest-mIoU images the report shows.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no table.")
@click.pass_context
def eval_command(
    ctx: click.Context,
    dataset: str,
    data_root: str | None,
    split: str | None,
    model_ref: str | None,
    inference: dict[str, Any],
    workers: int,
    as_json: bool,
    report: str | None,
    worst: int,
    limit: int | None,
    quiet: bool,
) -> None:
    """Evaluate a model with the paper's protocol: whole images, confusion matrix → mIoU.

    \b
      deeplab eval --data-root VOCdevkit --split val
      deeplab eval --model ckpt/ --os 8 --scales 0.5,0.75,1,1.25,1.5,1.75 --flip
      deeplab eval --dataset folder --data-root my_data --json --report report/
    """
    from ..config import EvalConfig
    from ..distributed import current_world
    from ..errors import DeeplabError, ReportWriteError
    from ..evaluation.protocol import run_evaluation

    config = EvalConfig(
        dataset=dataset,
        data_root=data_root,
        split=split,
        model=model_ref,
        workers=workers,
        limit=limit,
        report=report,
        worst=worst,
        **inference,
    )
    report_error: ReportWriteError | None = None
    try:
        result = run_evaluation(config, progress=not quiet)
    except ReportWriteError as error:  # rank 0: show the numbers, then say what failed
        result, report_error = error.result, error  # type: ignore[assignment]
    except DeeplabError as error:
        world = current_world()
        if world.is_main:
            raise
        # Under torchrun, rank 0 reports the errors every rank shares (bad data, bad options;
        # a bad file on any rank is raised on all of them). Give it time to print before
        # torchrun sees this rank fail and stops the others; still here, say it ourselves.
        time.sleep(RANK_ERROR_GRACE_S)
        click.echo(f"Error: rank {world.rank}: {error}", err=True)
        ctx.exit(error.exit_code)
    if not current_world().is_main:
        return
    if not quiet:
        print_result(result)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    elif quiet:
        click.echo(_summary_line(result), err=True)
    if report_error is not None:
        raise report_error
    if report and not quiet:
        click.echo(f"Report written to {report}", err=True)


def print_result(result: EvalResult) -> None:
    """The per-class table, the summary table and the n/a note, on stderr."""
    from ..progress import message, print_table

    m = result.metrics
    rows = [
        (c, name, _percent(m.iou[c]), _percent(m.accuracy[c]))
        for c, name in enumerate(m.class_names)
    ]
    print_table(
        f"Per-class IoU — {result.dataset} {result.split}, {result.images} images",
        ["#", "class", "IoU %", "accuracy %"],
        rows,
        justify=["right", "left", "right", "right"],
    )
    scales = ",".join(f"{s:g}" for s in result.scales)
    summary = [
        ("mIoU %", _percent(m.miou)),
        ("pixel accuracy %", _percent(m.pixel_accuracy)),
        ("mean accuracy %", _percent(m.mean_accuracy)),
        ("frequency-weighted IoU %", _percent(m.fw_iou)),
        ("images", str(result.images)),
        ("model", result.model),
        ("protocol", f"OS {result.output_stride}, scales {scales}, flip {'on' if result.flip else 'off'}"),
        ("backend", f"{result.backend} ({result.precision})"),
        ("time", f"{result.seconds:.1f} s ({result.images_per_second:.2f} images/s)"),
    ]  # fmt: skip
    print_table("Summary", ["metric", "value"], summary, justify=["left", "right"])
    if m.absent:
        names = ", ".join(m.class_names[c] for c in m.absent)
        message(
            f"n/a: {names} — in neither the labels nor the predictions of these images; "
            f"excluded from the mean ({m.num_classes - len(m.absent)} of {m.num_classes} "
            "classes averaged)."
        )


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _summary_line(result: EvalResult) -> str:
    m = result.metrics
    return (
        f"mIoU {_percent(m.miou)}% over {result.images} images "
        f"(pixel accuracy {_percent(m.pixel_accuracy)}%)."
    )
