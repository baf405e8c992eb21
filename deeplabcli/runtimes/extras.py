"""Which runtimes are installed, what the CPU can do, and which backend ``auto`` means.

Nothing here imports torch or a runtime: ``deeplab predict`` decides its path before paying
for either.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from pathlib import Path

from ..errors import MissingDependencyError, extra_hint

#: backend → (the module it needs, the extra that installs it)
RUNTIME_MODULES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
}
#: CPU flags worth knowing for inference speed (as /proc/cpuinfo names them)
FEATURE_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
    "amx_bf16", "asimd", "sve",
)  # fmt: skip


def backend_installed(backend: str) -> bool:
    """Whether ``backend``'s runtime can be imported here (torch always counts as installed)."""
    if backend == "torch":
        return True
    module, _ = RUNTIME_MODULES[backend]
    return importlib.util.find_spec(module) is not None


def require_backend(backend: str, what: str = "") -> None:
    """Raise a one-line :class:`MissingDependencyError` naming the pip command when
    ``backend``'s runtime (or, for exports, the ``onnx`` package) is missing."""
    runtime_ok = backend == "torch" or backend_installed(backend)
    if runtime_ok and (what != "export" or importlib.util.find_spec("onnx") is not None):
        return
    _, extra = RUNTIME_MODULES.get(backend, ("onnx", "onnx"))
    need = "the onnx package" if backend_installed(backend) else f"{backend}"
    raise MissingDependencyError(
        f"{what or 'the ' + backend + ' backend'} needs {need}, which is not installed. "
        f"{extra_hint(extra)}."
    )


def require_module(module: str, extra: str, what: str) -> None:
    """Raise a one-line :class:`MissingDependencyError` when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{what} needs {module}, which is not installed. {extra_hint(extra)}."
        )


@functools.lru_cache(maxsize=1)
def cpu_features() -> dict[str, object]:
    """The CPU's model name, core count and the vector/matrix extensions of
    :data:`FEATURE_FLAGS` it has (from /proc/cpuinfo on Linux; best effort elsewhere)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name") and value.strip():
            name = value.strip()
        elif key in ("flags", "Features"):
            flags |= set(value.split())
    return {
        "model": name,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "features": [flag for flag in FEATURE_FLAGS if flag in flags],
    }


#: CPU flags of native bfloat16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(flag in cpu_features()["features"] for flag in BF16_FLAGS)


def bf16_backend() -> str:
    """Where a large model runs in bfloat16 on a CPU with native bfloat16: OpenVINO where it
    and the exporter's ``onnx`` package are installed (ResNet-101: 3.0× torchvision eager,
    ``benchmarks/runtime_speed.py --section resnet``), else torch autocast (2.2-2.6×)."""
    exporter = importlib.util.find_spec("onnx") is not None
    return "openvino" if backend_installed("openvino") and exporter else "torch"


def cuda_present() -> bool:
    """Whether an NVIDIA GPU driver is loaded (so ``--device auto`` means CUDA), told without
    importing torch: the driver's /proc entry or device node."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def auto_backend(device: str = "auto", backbone: str | None = None) -> str:
    """The backend ``--backend auto`` means: torch on CUDA (no CUDA runtime of ONNX Runtime or
    OpenVINO is assumed); on a CPU the fastest installed runtime, measured with
    ``benchmarks/runtime_speed.py``: ONNX Runtime, then OpenVINO, then torch."""
    on_cuda = device.startswith("cuda") or (device == "auto" and cuda_present())
    if on_cuda:
        return "torch"
    for backend in preferred_cpu_backends(backbone):
        if backend_installed(backend):
            return backend
    return "torch"


def auto_backend_for_model(device: str = "auto", backbone: str | None = None) -> str:
    """:func:`auto_backend` for a torch model, which a runtime runs only after exporting it:
    torch when the exporter's ``onnx`` package is missing (``auto`` never fails for a missing
    package)."""
    backend = auto_backend(device, backbone)
    if backend != "torch" and importlib.util.find_spec("onnx") is None:
        return "torch"
    return backend


def preferred_cpu_backends(backbone: str | None = None) -> tuple[str, ...]:
    """Runtimes in the order ``auto`` tries them on a CPU (see :func:`auto_backend`; a large
    torch model that runs in bfloat16 stays on torch: ``inference.backends.plan_backend``)."""
    return ("onnxruntime", "openvino")
