"""An exported network in its runtime: float32 (N, 3, H, W) normalised pixels → float32
(N, C, H, W) logits, as numpy arrays, safe to call from several threads at once.

ONNX Runtime runs ``.onnx`` files; OpenVINO runs its IR (``.xml`` + ``.bin``) and ``.onnx``
files. ``threads`` is the intra-op thread count (None: the runtime's own choice, all cores).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .extras import require_backend
from .metadata import INPUT_NAME, METADATA_KEYS, PREFIX, onnx_metadata


class RuntimeNetwork:
    """The common face of the runtimes: ``network(x) -> logits`` plus what ran it."""

    backend: str = ""
    path: Path

    def __call__(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:  # pragma: no cover - interface
        raise NotImplementedError


class OnnxRuntimeNetwork(RuntimeNetwork):
    backend = "onnxruntime"

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        require_backend("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no warnings on stderr per session
        try:
            self.session = ort.InferenceSession(
                os.fspath(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ORT raises its own classes (InvalidProtobuf, Fail, ...)
            raise ModelLoadError(
                f"{self.path} is not a readable ONNX model ({_first_line(error)}). Export it "
                "again with `deeplab export`."
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)


class OpenVinoNetwork(RuntimeNetwork):
    backend = "openvino"

    def __init__(self, path: Path, *, threads: int | None = None, precision: str = "f32") -> None:
        require_backend("openvino")
        import openvino as ov

        self.path = Path(path)
        core = ov.Core()
        try:
            self.model = core.read_model(os.fspath(self.path))
            # f32 unless asked: OpenVINO otherwise runs bf16 on CPUs that have it (AVX512-BF16,
            # AMX), whose logits differ from torch's by up to 0.6 on the default model
            config: dict[str, Any] = {
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision,
            }  # fmt: skip
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self.compiled = core.compile_model(self.model, "CPU", config)
        except Exception as error:  # OpenVINO raises RuntimeError with a long report
            raise ModelLoadError(
                f"{self.path} is not a readable OpenVINO or ONNX model ({_first_line(error)}). "
                "Export it again with `deeplab export --format openvino`."
            ) from None
        self._local = threading.local()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per thread: requests are not thread-safe
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def metadata(self) -> dict[str, str]:
        if self.path.suffix.lower() == ".onnx":
            return onnx_metadata(self.path)
        return {
            PREFIX + key: self.model.get_rt_info(["deeplabcli", key]).astype(str)
            for key in METADATA_KEYS
            if self.model.has_rt_info(["deeplabcli", key])
        }


def open_network(path: Path, backend: str, *, threads: int | None = None) -> RuntimeNetwork:
    """The network in ``path`` on ``backend`` (``onnxruntime`` or ``openvino``)."""
    if backend == "onnxruntime":
        if Path(path).suffix.lower() != ".onnx":
            raise ModelLoadError(
                f"{path} is OpenVINO IR, which ONNX Runtime does not run. Use --backend "
                "openvino, or export to ONNX (deeplab export MODEL -o model.onnx)."
            )
        return OnnxRuntimeNetwork(path, threads=threads)
    if backend == "openvino":
        return OpenVinoNetwork(path, threads=threads)
    raise ValueError(f"no runtime network for backend {backend!r}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


__all__ = ["INPUT_NAME", "OnnxRuntimeNetwork", "OpenVinoNetwork", "RuntimeNetwork", "open_network"]
