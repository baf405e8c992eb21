"""Export: a model as an ONNX graph or OpenVINO IR that carries our metadata (so the file is a
model reference of its own), float or int8, and the cache that exports a model once for the
non-torch backends. :func:`export` is ``deeplab export``; :mod:`.quantize` makes the int8
versions, calibrated on the images :mod:`.calibration` finds and preprocesses.

Floor: above weights (it loads model references), below inference (whose runtime backends run
what it exports). Not called ``export``: the package would shadow :func:`deeplabcli.export`.
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "export": "api",
    "describe_export": "api",
    "plan_export": "api",
    "ExportPlan": "plan",
    "export_onnx": "onnx",
    "onnx_to_openvino": "openvino",
    "cached_export": "cache",
    "network_key": "cache",
    "lookup_reference": "references",
    "remember_reference": "references",
    "reference_identity": "references",
    "quantize_onnx": "quantize",
    "quantize_openvino": "quantize",
    "find_calibration_images": "calibration",
    "load_calibration": "calibration",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
