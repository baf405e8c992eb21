"""``deeplab predict``: segment image files, folders and globs into mask PNGs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

# OpenMP worker threads that spin between parallel regions (libgomp's default) collapse when
# the CPU is shared: measured on 2 busy cores, MobileNetV2 at 257 px took 1.1 s per image
# instead of 30 ms; with one competing process, even a short spin (GOMP_SPINCOUNT=10000) took
# 50 ms per forward pass against 21 ms passive. The price on an idle machine is the threads'
# wake-up per operation: 16 ms instead of 12 ms. Effective when this module is imported before
# torch (as `deeplab predict` does); a value set by the user wins (OMP_WAIT_POLICY=ACTIVE on a
# dedicated machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: ``--streams`` of predict and eval (see :mod:`deeplabcli.engine.streams`).
streams_option = click.option(
    "--streams",
    type=click.IntRange(min=1),
    default=None,
    help="CPU: batches that run side by side, sharing the threads (default: 2 for small models "
    "such as MobileNetV2 at batch size 1, whose layers cannot keep many threads busy; else 1).",
)


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


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    help="Mask file (one input, .png) or folder. Default: <stem>_mask.png next to each image.",
)
@click.option(
    "--model",
    "model_ref",
    metavar="REF",
    help="Model card name, checkpoint folder, .safetensors/.pth/.tflite file or Hub repo "
    "(default: the default model card, downloaded and cached on first use).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["palette", "index", "overlay"]),
    default="palette",
    show_default=True,
    help="palette: colour PNG holding class indices; index: grayscale class indices; "
    "overlay: the photo with coloured classes and a legend.",
)
@click.option(
    "--os",
    "output_stride",
    type=click.Choice(["8", "16"]),
    default=None,
    help="Output stride to run at (default: the model's own).",
)
@click.option(
    "--scales",
    type=ScalesType(),
    default="1",
    show_default=True,
    help="Input scales whose class probabilities are averaged, e.g. 0.5,0.75,1,1.25,1.5,1.75.",
)
@click.option("--flip", is_flag=True, help="Also average left-right flipped inputs.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto = CUDA when available.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Images per forward pass (images of equal network input size are batched).",
)
@streams_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per image on stdout.")
@click.option("--overwrite", is_flag=True, help="Replace existing masks (default: skip them).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def predict_command(
    inputs: tuple[str, ...],
    output: str | None,
    model_ref: str | None,
    fmt: str,
    output_stride: str | None,
    scales: tuple[float, ...],
    flip: bool,
    device: str,
    batch_size: int,
    streams: int | None,
    as_json: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Segment images: files, folders (searched recursively) and glob patterns.

    \b
      deeplab predict photo.jpg -o mask.png
      deeplab predict photos/ -o masks/ --format overlay
      deeplab predict "data/**/*.jpg" -o masks/ --os 8 --flip --json
    """
    from ..config import PredictConfig
    from ..engine.distributed import current_world
    from ..engine.predict import PredictResult, predict_files
    from ..resolve import load_model

    config = PredictConfig(
        output=output,
        format=fmt,
        output_stride=int(output_stride) if output_stride else None,
        scales=scales,
        flip=flip,
        device=device,
        batch_size=batch_size,
        streams=streams,
        overwrite=overwrite,
    )

    def print_record(result: PredictResult) -> None:
        click.echo(json.dumps(result.to_json()))
        sys.stdout.flush()  # one complete line per image, also under torchrun

    summary = predict_files(
        load_model(model_ref),
        inputs,
        config,
        on_result=print_record if as_json else None,
        progress=not quiet,
        inplace=True,  # the model was loaded for this run only: no second copy of the weights
    )
    for result in summary.results:
        if result.status == "skipped" and not quiet:
            click.echo(f"Skipped {result.message}", err=True)
    for failure in summary.failures:
        click.echo(f"Error: {failure.message}", err=True)
    if not quiet and current_world().is_main:
        click.echo(
            _summary_line(summary.written, summary.skipped, summary.failed, summary.seconds),
            err=True,
        )
    if summary.failed:
        sys.exit(1)


def _summary_line(written: int, skipped: int, failed: int, seconds: float) -> str:
    rate = f" ({written / seconds:.2f} images/s)" if written and seconds > 0 else ""
    parts = [f"Wrote {written} mask{'s' if written != 1 else ''} in {seconds:.1f} s{rate}"]
    if skipped:
        parts.append(f"{skipped} skipped (already exist; --overwrite replaces them)")
    if failed:
        parts.append(f"{failed} failed")
    return "; ".join(parts) + "."
