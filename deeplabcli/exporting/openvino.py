"""ONNX → OpenVINO IR (``.xml`` + ``.bin``) with the same metadata in ``rt_info``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ModelLoadError
from ..files import disk_full_as_error, new_file_mode
from ..runtimes.extras import require_backend
from ..runtimes.metadata import PREFIX, onnx_metadata


def onnx_to_openvino(onnx_path: str | os.PathLike, xml_path: str | os.PathLike) -> Path:
    """Convert an exported ONNX file to OpenVINO IR at ``xml_path`` (its ``.bin`` beside it),
    float32 weights, our metadata under ``rt_info["deeplabcli"]``. Both files are written
    under temporary names first, so a failure leaves neither."""
    require_backend("openvino", "the openvino export")
    import openvino as ov

    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    metadata = onnx_metadata(onnx_path)
    try:
        model = ov.convert_model(os.fspath(onnx_path))
    except Exception as error:  # pragma: no cover - our own ONNX graphs convert
        raise ModelLoadError(f"OpenVINO could not convert {onnx_path}: {error}") from None
    for key, value in metadata.items():
        model.set_rt_info(value, ["deeplabcli", key.removeprefix(PREFIX)])
    bin_path = xml_path.with_suffix(".bin")
    with (
        disk_full_as_error(xml_path),
        tempfile.TemporaryDirectory(prefix=f".{xml_path.name}.", dir=xml_path.parent) as staging,
    ):
        tmp_xml = Path(staging) / xml_path.name
        ov.save_model(model, os.fspath(tmp_xml), compress_to_fp16=False)
        for tmp in (tmp_xml, tmp_xml.with_suffix(".bin")):
            os.chmod(tmp, new_file_mode())
        os.replace(tmp_xml.with_suffix(".bin"), bin_path)
        os.replace(tmp_xml, xml_path)
    return xml_path
