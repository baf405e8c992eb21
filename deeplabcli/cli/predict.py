"""``deeplab predict``: segment image files, folders and globs into mask PNGs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .options import inference_options, model_option

# OpenMP worker threads that spin between parallel regions (libgomp's default) collapse when
# the CPU is shared: measured on 2 busy cores, MobileNetV2 at 257 px took 1.1 s per image
# instead of 30 ms; with one competing process, even a short spin (GOMP_SPINCOUNT=10000) took
# 50 ms per forward pass against 21 ms passive. The price on an idle machine is the threads'
# wake-up per operation: 16 ms instead of 12 ms. Effective when this module is imported before
# torch (as `deeplab predict` does); a value set by the user wins (OMP_WAIT_POLICY=ACTIVE on a
# dedicated machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    help="Mask file (one input, .png) or folder. Default: <stem>_mask.png next to each image.",
)
@model_option("default: the default model card, downloaded and cached on first use")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["palette", "index", "overlay"]),
    default="palette",
    show_default=True,
    help="palette: colour PNG holding class indices; index: grayscale class indices; "
    "overlay: the photo with coloured classes and a legend.",
)
@inference_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per image on stdout.")
@click.option("--overwrite", is_flag=True, help="Replace existing masks (default: skip them).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def predict_command(
    inputs: tuple[str, ...],
    output: str | None,
    model_ref: str | None,
    inference: dict[str, Any],
    fmt: str,
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
    from ..distributed import current_world
    from ..prediction.pipeline import PredictResult, predict_files
    from ..weights.resolve import load_model

    config = PredictConfig(
        output=output,
        format=fmt,
        overwrite=overwrite,
        **inference,
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
