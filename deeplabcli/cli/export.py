"""``deeplab export``: a model as ONNX or OpenVINO IR (float or int8) carrying our metadata."""

from __future__ import annotations

from typing import Any

import click

from ..config import DATASETS


class SizeType(click.ParamType):
    """Two positive integers ``H,W``: ``513,513``."""

    name = "H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = str(value).replace("x", ",").split(",")
        try:
            height, width = (int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not two whole numbers H,W, e.g. 513,513.")
        if height < 1 or width < 1:
            self.fail(f"{value!r} has a side that is not positive. Use e.g. 513,513.")
        return height, width


@click.command("export", short_help="Export a model to ONNX or OpenVINO IR (float or int8).")
@click.argument("ref", metavar="REF")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="The file to write: model.onnx, or model.xml (+ model.bin) for OpenVINO IR.",
)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["onnx", "openvino"]),
    help="onnx or openvino (default: from the suffix of -o; .xml means openvino).",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Quantise weights and activations to int8, calibrated on --calibrate images (a "
    "quantised .tflite file keeps its own quantisation: no --calibrate needed).",
)
@click.option(
    "--calibrate",
    metavar="DATA",
    help="Calibration images for --int8: a FOLDER of images (with images/, masks/ and "
    f"classes.txt: labelled), or a data set split KIND:SPLIT ({', '.join(DATASETS)}), e.g. "
    "voc:trainaug with --data-root. With labels, the mIoU of float and int8 is printed.",
)
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="How many calibration images, evenly spread over DATA.",
)
@click.option(
    "--data-root",
    metavar="PATH",
    envvar="DEEPLAB_DATA_ROOT",
    show_envvar=True,
    help="VOCdevkit (or VOC2012) folder, or the custom data set folder, of --calibrate KIND:SPLIT.",
)
@click.option(
    "--os",
    "output_stride",
    type=click.Choice(["8", "16"]),
    help="Output stride of the exported network (default: the model's own).",
)
@click.option("--opset", type=int, help="ONNX opset, 13 to 20 (default 17).", metavar="N")
@click.option(
    "--static-size",
    type=SizeType(),
    help="Fix the input's height and width in the graph, e.g. 513,513 (default: dynamic).",
)
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; only the path on stdout.")
def export_command(
    ref: str,
    output: str,
    export_format: str | None,
    int8: bool,
    calibrate: str | None,
    calibration_images: int,
    data_root: str | None,
    output_stride: str | None,
    opset: int | None,
    static_size: tuple[int, int] | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Export model REF (a model name, checkpoint, .safetensors/.pth/.tflite file or Hub
    repo) as ONNX or OpenVINO IR. The graph takes `pixels`, float32 (N, 3, H, W) normalised
    RGB, with dynamic N, H and W unless --static-size, and returns `logits` (N, C, H, W) at
    the input size. The file carries the model's classes, palette, preprocessing, output
    stride and provenance, so it works as --model for predict and eval.

    \b
      deeplab export deeplabv3-mobilenetv2-voc -o model.onnx
      deeplab export ckpt/ -o model.xml --os 8
      deeplab export model.tflite -o int8.onnx --int8 --calibrate voc:trainaug --data-root VOCdevkit
      deeplab export deeplabv3_mnv2_pascal_quant.tflite -o int8.onnx --int8 --static-size 513,513
      deeplab export ckpt/ -o int8.onnx --int8 --calibrate photos/ --calibration-images 50
    """
    from ..exporting.api import describe_export, export
    from ..progress import message

    written = export(
        ref,
        output,
        format=export_format,
        int8=int8,
        calibrate=calibrate,
        calibration_images=calibration_images,
        data_root=data_root,
        output_stride=None if output_stride is None else int(output_stride),
        opset=opset,
        static_size=static_size,
        overwrite=overwrite,
        progress=not quiet,
    )
    message(describe_export(written), quiet=quiet)
    click.echo(str(written))
