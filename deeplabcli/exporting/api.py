"""``deeplab export`` as one function: any model reference → an ONNX file or OpenVINO IR, float
or int8, carrying our metadata (so the file is a model reference of its own).

>>> from deeplabcli import export
>>> export("deeplabv3-mobilenetv2-voc", "model.onnx")  # doctest: +SKIP
>>> export("ckpt/", "model.xml", int8=True, calibrate="voc:trainaug",
...        data_root="VOCdevkit")  # doctest: +SKIP

Everything is checked before anything is written: the output (free, or ``overwrite``; a
writable place; the suffix of its format), the options, the calibration images (read and
preprocessed up front) and the model. The work happens in a hidden staging folder beside the
output, and the finished file (for OpenVINO the ``.bin`` and the ``.xml``) is renamed into
place at the end, so a failure at any point leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from pathlib import Path

from ..errors import (
    ConfigError,
    MissingDependencyError,
    ModelLoadError,
    OutputWriteError,
    extra_hint,
)
from ..files import check_writable, disk_full_as_error
from ..runtimes.exported import is_exported_path
from ..runtimes.extras import require_backend
from ..runtimes.metadata import (
    INPUT_NAME,
    OUTPUT_NAME,
    onnx_metadata,
    parse_metadata,
)
from ..runtimes.sessions import openvino_core, openvino_metadata
from .calibration import find_calibration_images, load_calibration
from .onnx import DEFAULT_OPSET, MIN_OPSET
from .plan import ExportPlan

#: export format → the suffix of the file it writes
FORMAT_SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}
#: the newest opset torch's TorchScript exporter writes
MAX_OPSET = 20


def export(
    model_or_ref: object,
    output: str | os.PathLike,
    *,
    format: str | None = None,
    int8: bool = False,
    calibrate: str | os.PathLike | None = None,
    calibration_images: int = 100,
    data_root: str | os.PathLike | None = None,
    output_stride: int | None = None,
    opset: int | None = None,
    static_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Export a model (a :class:`~deeplabcli.models.DeepLabV3` or any model reference) to
    ``output`` and return its path.

    - ``format``: ``"onnx"`` (``.onnx``) or ``"openvino"`` (``.xml`` + ``.bin``); default from
      the suffix of ``output`` (``.xml`` → OpenVINO, else ONNX).
    - ``int8``: post-training static quantisation calibrated on ``calibration_images`` images
      from ``calibrate`` (a folder, or a split ``voc:trainaug`` under ``data_root``; see
      :mod:`.calibration`); with labels, the mIoU of float and int8 on them is printed. A
      quantised ``.tflite`` file (Google's 8-bit models) needs no ``calibrate``: its int8 ONNX
      takes the file's own scales, zero points and weight codes (:mod:`.tflite_quant`).
    - ``output_stride``: export at this OS (8 or 16; the model's own by default).
    - ``opset``: the ONNX opset (default 17); ``static_size``: (H, W) fixed in the graph
      (default: dynamic N, H and W).
    - ``overwrite``: replace an existing ``output``; ``progress``: progress bars and messages.
    """
    own = None
    if int8 and calibrate is None:
        from .tflite_quant import quantised_tflite

        own = quantised_tflite(model_or_ref)
    plan = plan_export(
        output, format=format, int8=int8, calibrate=calibrate,
        calibration_images=calibration_images, data_root=data_root, opset=opset,
        static_size=static_size, overwrite=overwrite, own_quantization=own,
    )  # fmt: skip
    model = _load(model_or_ref)
    if output_stride is not None:
        model.config.check_output_stride(output_stride)
    from .build import build_export

    images = None
    if plan.calibration is not None:  # read and checked before anything is written
        config = model.config
        images = load_calibration(plan.calibration, config.preprocessing, config.num_classes,
                                  progress=progress)  # fmt: skip

    made = _missing_folders(plan.output.parent)
    try:
        with disk_full_as_error(plan.output):
            plan.output.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(
                prefix=f".{plan.output.name}.", dir=plan.output.parent
            ) as staging:
                staged = build_export(
                    model, plan, Path(staging), output_stride, images, progress=progress
                )
                for source, target in zip(staged, plan.files, strict=True):
                    os.replace(source, target)
    except BaseException:
        for folder in made:  # the folders made for -o go too (deepest first; empty only)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return plan.output


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def plan_export(
    output: str | os.PathLike,
    *,
    format: str | None = None,
    int8: bool = False,
    calibrate: str | os.PathLike | None = None,
    calibration_images: int = 100,
    data_root: str | os.PathLike | None = None,
    opset: int | None = None,
    static_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    own_quantization: Path | None = None,
) -> ExportPlan:
    """Check everything about an export that does not need the model (see :func:`export`);
    raises the one-line error of the first problem."""
    output = Path(os.fspath(output)).expanduser()
    suffix = output.suffix.lower()
    if format is None:
        format = "openvino" if suffix == ".xml" else "onnx"
    if format not in FORMAT_SUFFIXES:
        raise ConfigError(f"unknown export format {format!r}. Use onnx or openvino.")
    want = FORMAT_SUFFIXES[format]
    if suffix != want:
        raise ConfigError(
            f"-o {output} does not end in {want}, the suffix of {_format_name(format)} files. "
            f"Name the output {output.with_suffix(want).name}"
            + (" (or pass --format openvino for .xml)." if format == "onnx" else ".")
        )
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset {opset} is not supported. Use an --opset from {MIN_OPSET} to {MAX_OPSET} "
            f"(default {DEFAULT_OPSET})."
        )
    if static_size is not None:
        static_size = (int(static_size[0]), int(static_size[1]))
        if min(static_size) < 1:
            raise ConfigError("--static-size needs two positive numbers, e.g. 513,513.")
    if calibrate is not None and not int8:
        raise ConfigError("--calibrate is only used with --int8. Add --int8, or drop --calibrate.")
    if int8 and calibrate is None and own_quantization is None:
        raise ConfigError(
            "--int8 needs calibration images. Pass --calibrate FOLDER (a folder of images) or "
            "--calibrate voc:trainaug with --data-root (a quantised .tflite file needs none)."
        )
    if own_quantization is not None and format != "onnx":
        raise ConfigError(
            "--int8 from a .tflite file's own quantisation writes ONNX only. Export to .onnx, "
            "or pass --calibrate for an OpenVINO int8 export."
        )
    plan = ExportPlan(output, format, opset, static_size, None)
    _check_outputs(plan, overwrite)
    require_backend("onnxruntime", "export")
    if format == "openvino":
        require_backend("openvino", "--format openvino")
    if int8 and format == "openvino" and importlib.util.find_spec("nncf") is None:
        raise MissingDependencyError(
            "--int8 with --format openvino needs nncf, which is not installed. "
            f"{extra_hint('openvino')}."
        )
    calibration = (
        find_calibration_images(calibrate, data_root, calibration_images)
        if int8 and calibrate is not None
        else None
    )
    own = own_quantization if int8 and calibration is None else None
    return ExportPlan(output, format, opset, static_size, calibration, own)


def _check_outputs(plan: ExportPlan, overwrite: bool) -> None:
    for path in plan.files:
        if path.is_dir():
            raise OutputWriteError(f"{path} is a folder. Choose a file name for -o.")
        if path.exists() and not overwrite:
            raise OutputWriteError(
                f"{path} already exists. Pass --overwrite to replace it, or choose another -o."
            )
    target = plan.output.parent if plan.output.is_file() else plan.output  # --overwrite
    check_writable(target, "Choose another -o")


def _format_name(format: str) -> str:
    return "ONNX" if format == "onnx" else "OpenVINO IR"


def _load(model_or_ref: object):
    from ..models import DeepLabV3
    from ..weights.resolve import load_model

    if isinstance(model_or_ref, DeepLabV3):
        return model_or_ref
    if isinstance(model_or_ref, (str, os.PathLike)) and is_exported_path(model_or_ref):
        raise ModelLoadError(
            f"{os.fspath(model_or_ref)} is already an exported network, which `deeplab export` "
            "does not read. Export the model it came from (a model name, a checkpoint, a .pth, "
            ".safetensors or .tflite file)."
        )
    if model_or_ref is not None and not isinstance(model_or_ref, (str, os.PathLike)):
        raise TypeError(f"expected a DeepLabV3 or a model reference, got {type(model_or_ref)}")
    return load_model(model_or_ref)  # type: ignore[arg-type]


def describe_export(path: str | os.PathLike) -> str:
    """One line on what an export wrote: files, size, format and opset, float or int8, the
    input shape (dynamic or static) and the output stride."""
    path = Path(os.fspath(path))
    pairs = read_export_metadata(path)
    info = parse_metadata(pairs, str(path))
    record = info.provenance.get("export", {})
    files = [path, path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [path]
    size = sum(f.stat().st_size for f in files) / 1e6
    opset = record.get("opset", "?")
    kind = f"ONNX opset {opset}" if len(files) == 1 else f"OpenVINO IR (ONNX opset {opset})"
    if info.int8:
        calibration = record.get("int8", {}).get("calibration", {})
        if "tensors" in calibration:  # a quantised .tflite file's own numbers
            precision = f"int8 ({calibration.get('source')})"
        else:
            precision = f"int8 (calibrated on {calibration.get('images', '?')} images)"
    else:
        precision = "float32"
    if info.static_size:
        shape = f"(N, 3, {info.static_size[0]}, {info.static_size[1]}), static H, W"
    else:
        shape = "(N, 3, H, W), dynamic N, H, W"
    names = f"{path} + {files[1].name}" if len(files) > 1 else str(path)
    return (
        f"wrote {names} ({size:.1f} MB): {kind}, {precision}; input {INPUT_NAME} float32 "
        f"{shape}; output {OUTPUT_NAME} (N, {info.config.num_classes}, H, W); "
        f"OS {info.config.output_stride}."
    )


def read_export_metadata(path: Path) -> dict[str, str]:
    """The ``deeplabcli.*`` metadata of an exported .onnx or .xml file (weights not loaded
    into a runtime)."""
    if path.suffix.lower() != ".xml":
        return onnx_metadata(path)
    return openvino_metadata(openvino_core().read_model(os.fspath(path)))
