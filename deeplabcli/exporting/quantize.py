"""Post-training static int8 quantisation of an exported network, calibrated on real images.

Two quantisers, one per runtime:

- ONNX (:func:`quantize_onnx`): ONNX Runtime's ``quantize_static`` writing QDQ
  (QuantizeLinear/DequantizeLinear) pairs, int8 weights per output channel (symmetric),
  uint8 activations with asymmetric ranges from min/max calibration (:data:`ORT_SETTINGS`).
- OpenVINO (:func:`quantize_openvino`): NNCF's ``nncf.quantize`` on the converted IR
  (:data:`NNCF_SETTINGS`), which adds FakeQuantize operations the CPU plugin runs as int8.

The settings are those that measured best on Google's uint8 MobileNetV2 (513², calibrated on
100 VOC trainaug images, mIoU on the 120 shared val images; the figures are in the README's
"Deployment: export" section): ONNX Runtime's uint8 asymmetric activations beat int8 ones
(asymmetric or symmetric), per-tensor weights, Percentile and Entropy ranges (which also need
about 12 GB for 20 images at 513²) and keeping the classifier in float; NNCF's full bias
correction beat its fast one. OpenVINO runs ONNX Runtime's QDQ graphs, but not correctly here
(4% mIoU), so each runtime gets its own quantiser.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import progress_bar
from ..runtimes.extras import require_module
from ..runtimes.metadata import INPUT_NAME

#: keyword arguments of onnxruntime.quantization.quantize_static (enum values by name)
ORT_SETTINGS: dict[str, Any] = {
    "quant_format": "QDQ",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "calibrate_method": "MinMax",
    "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True},
}
#: keyword arguments of nncf.quantize (the preset by name)
NNCF_SETTINGS: dict[str, Any] = {"preset": "MIXED", "fast_bias_correction": False}


def quantize_onnx(
    float_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    inputs: Sequence[np.ndarray],
    *,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Quantise the float ONNX network at ``float_path`` into ``int8_path`` (a path the caller
    stages), calibrated on ``inputs``: float32 (1, 3, H, W) network inputs (sizes may differ).
    ``settings`` overrides :data:`ORT_SETTINGS` (for measurements)."""
    require_module("onnxruntime", "onnx", "--int8")
    from onnxruntime import quantization as q

    chosen = {**ORT_SETTINGS, **(settings or {})}
    kwargs = {
        **chosen,
        "quant_format": getattr(q.QuantFormat, chosen["quant_format"]),
        "activation_type": getattr(q.QuantType, chosen["activation_type"]),
        "weight_type": getattr(q.QuantType, chosen["weight_type"]),
        "calibrate_method": getattr(q.CalibrationMethod, chosen["calibrate_method"]),
        # every image's ranges count: MinMax keeps two numbers per tensor and image, and ONNX
        # Runtime 1.32 drops (without merging) each full chunk of CalibMaxIntermediateOutputs
        "extra_options": dict(chosen["extra_options"]),
    }
    bar_state: dict[str, Any] = {}

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.index = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            bar = bar_state.get("bar")
            if self.index and bar is not None:
                bar.advance()
            if self.index >= len(inputs):
                return None
            self.index += 1
            return {INPUT_NAME: inputs[self.index - 1]}

        def __len__(self) -> int:
            return len(inputs)

    bar_context = progress_bar(len(inputs), "calibrating int8", disable=not progress, unit="images")
    with bar_context as bar, _quiet_root_logger():
        bar_state["bar"] = bar
        q.quantize_static(os.fspath(float_path), os.fspath(int8_path), Reader(), **kwargs)
    return Path(int8_path)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence the root logger for the block: ONNX Runtime's quantiser warns through it
    ("consider pre-processing", which measured no better here). A handler is added meanwhile so
    that ``logging.warning`` does not install a stderr handler of its own for good."""
    root = logging.getLogger()
    level, handler = root.level, logging.NullHandler()
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


def quantize_openvino(
    model: Any,
    inputs: Sequence[np.ndarray],
    *,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> Any:
    """NNCF's int8 version of the OpenVINO model ``model`` (an ``ov.Model``), calibrated on
    ``inputs`` as in :func:`quantize_onnx`. ``settings`` overrides :data:`NNCF_SETTINGS`."""
    require_module("nncf", "openvino", "--int8 with --format openvino")
    # NNCF imports torch's extension builder, which warns that there is no CUDA toolkit
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    chosen = {**NNCF_SETTINGS, **(settings or {})}
    preset = getattr(nncf.QuantizationPreset, chosen.pop("preset"))
    bar_state: dict[str, Any] = {}

    def transform(x: np.ndarray) -> np.ndarray:
        bar = bar_state.get("bar")
        if bar is not None:
            bar.advance()
        return x

    logging.getLogger("nncf").setLevel(logging.ERROR)  # no INFO lines of its own
    dataset = nncf.Dataset(list(inputs), transform)
    bar_context = progress_bar(len(inputs), "calibrating int8", disable=not progress, unit="images")
    # NNCF draws progress bars of its own on stdout, which holds only results: they go nowhere
    with bar_context as bar, contextlib.redirect_stdout(io.StringIO()):
        bar_state["bar"] = bar
        return nncf.quantize(model, dataset, preset=preset, subset_size=len(inputs), **chosen)
