"""Exports for ``runtime_speed.py``, all with deeplabcli's own functions (what ``deeplab
export`` runs): our model as ONNX (``export_onnx``) and OpenVINO IR (``onnx_to_openvino``),
and int8 versions of both (``quantize_onnx``: ONNX Runtime's static QDQ quantisation;
``quantize_openvino``: NNCF; their settings are ``deeplabcli.exporting.quantize``'s), calibrated
on the network inputs given (``runtime_speed.py`` gives 20 VOC train images preprocessed as
predict does).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deeplabcli.runtimes.extras import backend_installed


def prepare_exports(
    model: Any, folder: Path, *, calibration: list[np.ndarray] | None = None
) -> dict[str, Path | str]:
    """Export ``model`` for the runtimes: ``onnx``, ``xml`` and, given calibration inputs,
    ``onnx_int8`` and ``xml_int8``; each a path, or why it is missing. Prints what it took.
    ``model``: our DeepLabV3; ``calibration``: float32 (1, 3, H, W) network inputs."""
    made: dict[str, Path | str] = {}
    steps = [("onnx", "onnxruntime", "onnx"), ("xml", "openvino", "openvino")]
    if calibration:
        steps += [("onnx_int8", "onnxruntime", "onnx"), ("xml_int8", "openvino", "nncf")]
    spent = []
    for key, backend, module in steps:
        if not backend_installed(backend) or importlib.util.find_spec(module) is None:
            made[key] = f"{module} is not installed"
            continue
        base = made.get(key.removesuffix("_int8"))
        if key.endswith("_int8") and not isinstance(base, Path):
            made[key] = f"no float export to quantise ({base})"
            continue
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), _quiet():
                warnings.simplefilter("ignore")
                made[key] = _export_step(key, model, folder, made, calibration)
        except Exception as error:  # a runtime's own failure: reported in the table
            made[key] = f"{key} export failed: {str(error).splitlines()[0][:200]}"
        spent.append(f"{key} {time.perf_counter() - start:.1f} s")
    print(f"  (exports: {', '.join(spent)})")
    return made


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Progress bars and log lines of the exporters and quantisers, kept out of the tables."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _export_step(
    key: str,
    model: Any,
    folder: Path,
    made: dict[str, Path | str],
    calibration: list[np.ndarray] | None,
) -> Path:
    from deeplabcli import exporting

    if key == "onnx":
        return exporting.export_onnx(model, folder / "model.onnx")
    if key == "xml":
        return exporting.onnx_to_openvino(made["onnx"], folder / "model.xml")
    if key == "onnx_int8":
        out = folder / "model_int8.onnx"
        return exporting.quantize_onnx(made["onnx"], out, calibration, progress=False)
    import openvino as ov

    model = ov.Core().read_model(os.fspath(made["xml"]))
    quantised = exporting.quantize_openvino(model, calibration, progress=False)
    ov.save_model(quantised, os.fspath(folder / "model_int8.xml"), compress_to_fp16=False)
    return folder / "model_int8.xml"
