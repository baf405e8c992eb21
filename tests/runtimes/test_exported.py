"""Which runtime runs an exported file, and which backend ``auto`` means for a torch model:
decided from the installed packages alone (no torch, no runtime imported)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deeplabcli.runtimes.exported import exported_backend
from deeplabcli.runtimes.extras import auto_backend_for_model


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` not installed for this test: ``import`` fails, ``find_spec`` is None."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_an_exported_file_runs_on_its_own_runtime_or_the_one_named() -> None:
    pytest.importorskip("onnxruntime")
    assert exported_backend("model.onnx") == "onnxruntime"
    assert exported_backend("model.XML") == "openvino"
    assert exported_backend("model.onnx", "openvino") == "openvino"
    assert exported_backend("model.xml", "onnxruntime") == "onnxruntime"  # refused on opening


def test_an_onnx_file_runs_on_openvino_when_onnx_runtime_is_missing(monkeypatch) -> None:
    pytest.importorskip("openvino")
    hide(monkeypatch, "onnxruntime")
    assert exported_backend("model.onnx") == "openvino"
    hide(monkeypatch, "openvino")
    assert exported_backend("model.onnx") == "onnxruntime"  # whose missing extra is then named


def test_auto_for_a_torch_model(monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    assert auto_backend_for_model("cpu") == "onnxruntime"
    assert auto_backend_for_model("cuda") == "torch"  # no CUDA runtime of theirs is assumed
    with monkeypatch.context() as patch:
        hide(patch, "onnx")  # the runtime without the exporter: torch, never an error
        assert auto_backend_for_model("cpu") == "torch"
    hide(monkeypatch, "onnxruntime", "openvino")
    assert auto_backend_for_model("cpu") == "torch"


def test_deciding_imports_neither_torch_nor_a_runtime() -> None:
    code = (
        "import sys\n"
        "from deeplabcli.runtimes.exported import exported_backend\n"
        "from deeplabcli.runtimes.extras import auto_backend_for_model\n"
        "exported_backend('m.onnx'); auto_backend_for_model('cpu')\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'onnx') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
