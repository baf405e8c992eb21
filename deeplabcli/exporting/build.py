"""The work of an export, in a staging folder: the float ONNX graph, then (as asked) its int8
version and/or OpenVINO IR, each file carrying our metadata. :func:`~.api.export` checks
everything first and renames what this returns into place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..progress import message
from ..runtimes.metadata import PREFIX, model_metadata, onnx_metadata, parse_metadata
from ..runtimes.postprocess import class_map
from ..runtimes.sessions import (
    OnnxRuntimeNetwork,
    OpenVinoNetwork,
    RuntimeNetwork,
    openvino_core,
)
from .calibration import CalibrationImage, confusion, mean_iou
from .onnx import export_onnx
from .openvino import onnx_to_openvino
from .quantize import NNCF_SETTINGS, ORT_SETTINGS, quantize_onnx, quantize_openvino

if TYPE_CHECKING:
    from ..models import DeepLabV3
    from .plan import ExportPlan


def build_export(
    model: DeepLabV3,
    plan: ExportPlan,
    staging: Path,
    output_stride: int | None,
    images: Sequence[CalibrationImage] | None,
    *,
    progress: bool = True,
    extra_provenance: dict[str, Any] | None = None,
) -> tuple[Path, ...]:
    """Write the export ``plan`` asks for into ``staging``; returns the staged files in the
    order of ``plan.files``. ``images``: the calibration images of an int8 export;
    ``extra_provenance``: entries for the export record (e.g. a fixed ``created``)."""
    float_onnx = export_onnx(
        model, staging / "float.onnx", output_stride=output_stride, opset=plan.opset,
        static_size=plan.static_size, extra_provenance=extra_provenance,
    )  # fmt: skip
    if plan.own_quantization is not None:
        from .tflite_quant import quantize_like_tflite

        int8, count = quantize_like_tflite(
            float_onnx, staging / "int8.onnx", plan.own_quantization, progress=progress
        )
        record = _int8_record(plan, (), "onnxruntime", ORT_SETTINGS, "onnxruntime")
        record["calibration"] = {"source": f"{plan.own_quantization.name}'s own quantisation",
                                 "tensors": count}  # fmt: skip
        set_onnx_metadata(int8, int8_metadata(float_onnx, record))
        return (int8,)
    if images is None:
        if plan.format == "onnx":
            return (float_onnx,)
        xml = onnx_to_openvino(float_onnx, staging / plan.output.name)
        return (xml.with_suffix(".bin"), xml)
    inputs = [image.pixels for image in images]
    if plan.format == "onnx":
        int8 = quantize_onnx(float_onnx, staging / "int8.onnx", inputs, progress=progress)
        record = _int8_record(plan, images, "onnxruntime", ORT_SETTINGS, "onnxruntime")
        record["calibration"].update(
            _compare(float_onnx, int8, images, OnnxRuntimeNetwork, progress=progress)
        )
        set_onnx_metadata(int8, int8_metadata(float_onnx, record))
        return (int8,)
    import openvino as ov

    quantized = quantize_openvino(ov.convert_model(os.fspath(float_onnx)), inputs,
                                  progress=progress)  # fmt: skip
    xml = staging / plan.output.name
    ov.save_model(quantized, os.fspath(xml), compress_to_fp16=False)
    record = _int8_record(plan, images, "nncf", NNCF_SETTINGS, "nncf")
    record["calibration"].update(
        _compare(float_onnx, xml, images, OpenVinoNetwork, progress=progress)
    )
    set_openvino_metadata(xml, int8_metadata(float_onnx, record))
    return (xml.with_suffix(".bin"), xml)


def _int8_record(
    plan: ExportPlan,
    images: Sequence[CalibrationImage],
    quantizer: str,
    settings: dict[str, Any],
    package: str,
) -> dict[str, Any]:
    """How an int8 export was made, for its provenance (``export.int8``)."""
    from importlib.metadata import version

    source = plan.calibration
    return {
        "quantizer": quantizer,
        "quantizer_version": version(package),
        "settings": settings,
        "calibration": {
            "source": source.spec if source else None,
            "images": len(images),
            "available": source.available if source else len(images),
        },
    }


def _compare(
    float_path: Path,
    int8_path: Path,
    images: Sequence[CalibrationImage],
    runtime: type[RuntimeNetwork],
    *,
    progress: bool,
) -> dict[str, Any]:
    """mIoU of the float and the int8 network on the labelled calibration images (printed, and
    returned for the provenance); nothing for images without labels."""
    labelled = [image for image in images if image.mask is not None]
    if not labelled:
        return {"labelled": False}
    float_net, int8_net = runtime(float_path), runtime(int8_path)  # type: ignore[call-arg]
    config = parse_metadata(onnx_metadata(float_path), str(float_path)).config
    classes = config.num_classes
    matrices = [np.zeros((classes, classes), dtype=np.int64) for _ in range(2)]
    for image in labelled:
        for cm, network in zip(matrices, (float_net, int8_net), strict=True):
            mask = class_map(network(image.pixels), image.content, image.size,
                             config.align_corners)  # fmt: skip
            cm += confusion(image.mask, mask, classes)  # type: ignore[arg-type]
    float_miou, int8_miou = (mean_iou(cm) for cm in matrices)
    change = 100 * (int8_miou - float_miou)
    message(
        f"mIoU on the {len(labelled)} labelled calibration images: float "
        f"{100 * float_miou:.2f}%, int8 {100 * int8_miou:.2f}% ({change:+.2f} points).",
        quiet=not progress,
    )
    return {"labelled": True, "miou_float": float_miou, "miou_int8": int8_miou}


def int8_metadata(float_onnx: Path, record: dict[str, Any]) -> dict[str, str]:
    """The float export's metadata, marked int8, with ``record`` as ``export.int8`` in its
    provenance."""
    pairs = onnx_metadata(float_onnx)
    info = parse_metadata(pairs, str(float_onnx))
    provenance = dict(info.provenance)
    provenance["export"] = {**provenance.get("export", {}), "int8": record,
                            "deeplabcli_version": __version__}  # fmt: skip
    return model_metadata(
        info.config, provenance, palette=json.loads(pairs[PREFIX + "palette"]), int8=True,
        static_size=info.static_size,
    )  # fmt: skip


def set_onnx_metadata(path: Path, pairs: dict[str, str]) -> None:
    """Replace the ONNX file's ``metadata_props`` with ``pairs`` (in place: a staged file)."""
    import onnx

    graph = onnx.load(os.fspath(path))
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, pairs)
    onnx.save(graph, os.fspath(path))


def set_openvino_metadata(xml: Path, pairs: dict[str, str]) -> None:
    """Replace our ``rt_info["deeplabcli"]`` entries of the IR at ``xml`` (a staged file)."""
    import openvino as ov

    model = openvino_core().read_model(os.fspath(xml))
    for key, value in pairs.items():
        model.set_rt_info(value, ["deeplabcli", key.removeprefix(PREFIX)])
    staged = xml.with_name(f"meta.{xml.name}")
    ov.save_model(model, os.fspath(staged), compress_to_fp16=False)
    os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(staged, xml)
