"""An exported network in its runtime: float32 (N, 3, H, W) normalised pixels → float32
(N, C, H, W) logits, as numpy arrays, safe to call from several threads at once.

ONNX Runtime runs ``.onnx`` files; OpenVINO runs its IR (``.xml`` + ``.bin``) and ``.onnx``
files. ``threads`` is the intra-op thread count (None: the runtime's own choice, all cores).
Both start from what they made of a file before, kept in the export cache (ONNX Runtime's
optimised graph: :func:`~.cache.optimized_file`; OpenVINO's compiled network), so a one-photo
predict does not pay for optimising or compiling the graph again.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from ..files import temporary_sibling
from .cache import cache_dir, optimized_file, stale_optimized
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

    def __init__(
        self, path: Path, *, threads: int | None = None, keep_optimized: bool = True
    ) -> None:
        """``keep_optimized``: start from (and keep) the graph as ONNX Runtime optimised it on
        this machine, in the export cache (:func:`~.cache.optimized_file`): full optimisation
        takes about 0.2 s of CPU on the default model, a third of a one-photo predict."""
        require_backend("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        kept = _kept(self.path, f"onnxruntime-{ort.__version__}") if keep_optimized else None
        self.session = None
        if kept is not None and kept.is_file():
            with contextlib.suppress(Exception):  # damaged: optimise the source again
                self.session = _ort_session(kept, threads, optimize=False)
        if self.session is None and kept is not None:
            self.session = _optimise_into(self.path, kept, threads)
        if self.session is None:
            try:
                self.session = _ort_session(self.path, threads, optimize=True)
            except Exception as error:  # ORT raises its own classes (InvalidProtobuf, Fail, ...)
                raise ModelLoadError(
                    f"{self.path} is not a readable ONNX model ({_first_line(error)}). Export "
                    "it again with `deeplab export`."
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
        self.path = Path(path)
        core = openvino_core()
        # compiled networks kept in the export cache: compiling takes ~4 s of CPU for the
        # default model, loading the kept one ~0.4 s (OpenVINO keys them by model and settings)
        with contextlib.suppress(Exception):  # an unwritable cache: compile every time
            core.set_property({"CACHE_DIR": os.fspath(cache_dir() / "openvino")})
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
        return openvino_metadata(self.model)


def openvino_metadata(model: Any) -> dict[str, str]:
    """Our ``deeplabcli.*`` pairs of an OpenVINO model, from its ``rt_info["deeplabcli"]``."""
    return {
        PREFIX + key: model.get_rt_info(["deeplabcli", key]).astype(str)
        for key in METADATA_KEYS
        if model.has_rt_info(["deeplabcli", key])
    }


@functools.lru_cache(maxsize=1)
def openvino_core() -> Any:
    """This process's one ``openvino.Core``, kept for its lifetime. One, not one per network:
    OpenVINO's CPU plugin (2026.4) points the thread's signal stack at memory of its own when it
    loads and puts the previous one back when it unloads, so two Cores released in the order
    they were made leave a freed signal stack behind, and the next signal (SIGCHLD from any
    child process) kills the process with SIGSEGV (reproduced: the test suite crashed so)."""
    import openvino as ov

    return ov.Core()


def open_network(
    path: Path, backend: str, *, threads: int | None = None, precision: str = "f32"
) -> RuntimeNetwork:
    """The network in ``path`` on ``backend`` (``onnxruntime`` or ``openvino``; ``precision``:
    OpenVINO's inference precision, ``f32`` or ``bf16``)."""
    if backend == "onnxruntime":
        if Path(path).suffix.lower() != ".onnx":
            raise ModelLoadError(
                f"{path} is OpenVINO IR, which ONNX Runtime does not run. Use --backend "
                "openvino, or export to ONNX (deeplab export MODEL -o model.onnx)."
            )
        return OnnxRuntimeNetwork(path, threads=threads)
    if backend == "openvino":
        return OpenVinoNetwork(path, threads=threads, precision=precision)
    raise ValueError(f"no runtime network for backend {backend!r}")


def _ort_session(path: Path, threads: int | None, *, optimize: bool, save: Path | None = None):
    """An ONNX Runtime CPU session of ``path``: fully optimised (``save``: the optimised graph
    written there too), or run as it is (a graph ONNX Runtime optimised already)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    if save is not None:
        options.optimized_model_filepath = os.fspath(save)
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # as `deeplab predict` sets
        # it: idle intra-op threads sleep instead of spinning (on a busy 2-core CPU spinning
        # made deeplabv3_257_mv_gpu take 100 ms per image instead of 36; see cli/predict.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no warnings on stderr per session
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def _kept(path: Path, runtime: str) -> Path | None:
    """Where the optimised graph of ``path`` is kept (None: ``path`` cannot be looked at)."""
    try:
        return optimized_file(path, runtime)
    except OSError:
        return None  # a missing file: the session says what is wrong with it


def _optimise_into(path: Path, kept: Path, threads: int | None) -> Any:
    """A session of ``path`` whose optimised graph is written to ``kept`` (atomically; older
    forms of the same source removed), or None when that fails (an unwritable cache, or a
    model ONNX Runtime cannot read: the caller then says which)."""
    tmp = temporary_sibling(kept)
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        session = _ort_session(path, threads, optimize=True, save=tmp)
        os.replace(tmp, kept)
    except Exception:
        return None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    for stale in stale_optimized(kept):
        with contextlib.suppress(OSError):
            stale.unlink()
    return session


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


__all__ = ["INPUT_NAME", "OnnxRuntimeNetwork", "OpenVinoNetwork", "RuntimeNetwork", "open_network"]
