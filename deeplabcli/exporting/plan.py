"""What an export will write, decided and checked (by :func:`~.api.plan_export`) before the
model is loaded; :func:`~.build.build_export` carries it out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .calibration import CalibrationSource


@dataclass(frozen=True)
class ExportPlan:
    """What an export will write, checked before the model is loaded."""

    output: Path  # the file asked for (.onnx, or the .xml of OpenVINO IR)
    format: str  # "onnx" | "openvino"
    opset: int
    static_size: tuple[int, int] | None
    calibration: CalibrationSource | None  # int8 only
    # int8 with this quantised .tflite file's own scales and zero points (no calibration)
    own_quantization: Path | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the export writes, in the order they are renamed into place (IR: the
        .bin, then the .xml that names it)."""
        if self.format == "openvino":
            return (self.output.with_suffix(".bin"), self.output)
        return (self.output,)
