"""``deeplab predict``: segment image files, folders and globs into mask PNGs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from ..config import MASK_FORMATS
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
    help="Mask file (one input: .png, .npz for probs, .mp4/.mkv for a video) or folder. "
    "Default: <stem>_mask.png (.npz; videos .mkv, overlays .mp4) next to each input.",
)
@model_option("default: the default model card, downloaded and cached on first use")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(MASK_FORMATS),
    default="palette",
    show_default=True,
    help="palette: colour PNG holding class indices; index: grayscale class indices; "
    "overlay: the photo with coloured classes and a legend; probs: .npz of the class "
    "probabilities (float16, C×H×W); confidence: grayscale PNG of the top-class probability. "
    "Videos: palette, index (lossless) or overlay (H.264).",
)
@click.option(
    "--frames-dir",
    metavar="DIR",
    help="Videos: write each frame's mask as DIR/<video stem>/<frame>.png instead of a video.",
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
    frames_dir: str | None,
    as_json: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Segment images (files, folders searched recursively, glob patterns) and videos.

    \b
      deeplab predict photo.jpg -o mask.png
      deeplab predict photos/ -o masks/ --format overlay
      deeplab predict "data/**/*.jpg" -o masks/ --os 8 --flip --json
      deeplab predict big.jpg -o mask.png --tile 513
      deeplab predict clip.mp4 -o out.mp4 --format overlay
    """
    from ..config import PredictConfig
    from ..prediction import light
    from ..prediction.results import PredictResult

    config = PredictConfig(
        output=output,
        format=fmt,
        frames_dir=frames_dir,
        overwrite=overwrite,
        **inference,
    )

    def print_record(result: PredictResult) -> None:
        click.echo(json.dumps(result.to_json()))
        sys.stdout.flush()  # one complete line per image, also under torchrun

    report: dict[str, Any] = {"on_result": print_record if as_json else None, "progress": not quiet}
    fast = light.plan(model_ref, inputs, config)  # decided before anything imports torch
    if fast is not None:
        summary, is_main = light.predict_light(fast, inputs, config, **report), True
    else:
        from ..distributed import current_world
        from ..inference.backends import load_inference_model
        from ..prediction.pipeline import predict_files

        model = load_inference_model(model_ref, config)
        # inplace: the model was loaded for this run only, so no second copy of the weights
        summary = predict_files(model, inputs, config, **report, inplace=True, reference=model_ref)
        is_main = current_world().is_main
    for result in summary.results:
        if result.status == "skipped" and not quiet:
            click.echo(f"Skipped {result.message}", err=True)
    for failure in summary.failures:
        click.echo(f"Error: {failure.message}", err=True)
    if not quiet and is_main:
        click.echo(
            _summary_line(
                summary.written, summary.skipped, summary.failed, summary.seconds, summary.frames
            ),
            err=True,
        )
    if summary.failed:
        sys.exit(1)


def _summary_line(written: int, skipped: int, failed: int, seconds: float, frames: int = 0) -> str:
    rate = f" ({written / seconds:.2f} images/s)" if written and seconds > 0 else ""
    if frames:  # videos count one mask each: their rate is in frames
        rate = f" ({frames} video frame{'s' if frames != 1 else ''}, {frames / seconds:.1f}/s)"
    parts = [f"Wrote {written} mask{'s' if written != 1 else ''} in {seconds:.1f} s{rate}"]
    if skipped:
        parts.append(f"{skipped} skipped (already exist; --overwrite replaces them)")
    if failed:
        parts.append(f"{failed} failed")
    return "; ".join(parts) + "."
