"""The torch network's precision (``amp``): float32 unless the device computes a narrower
type natively and the model is large (a ResNet) or the caller asks; predict's default turns it
on, eval's keeps float32, and ``auto`` keeps such a model on torch."""

from __future__ import annotations

import pytest
import torch

from deeplabcli import build_model
from deeplabcli.config import EvalConfig, InferenceConfig, PredictConfig
from deeplabcli.inference.backends import plan_backend
from deeplabcli.inference.precision import LARGE_MODEL_BYTES, autocast_dtype
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.runtimes import extras

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def large():
    """ResNet-50 DeepLabv3 with random weights: 160 MB of parameters."""
    torch.manual_seed(0)
    return build_model("deeplabv3_resnet50", num_classes=21).eval()


@pytest.fixture(scope="module")
def small():
    return build_model("deeplabv3_tiny").eval()


def bytes_of(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_the_rule(monkeypatch, large, small, native) -> None:
    monkeypatch.setattr(extras, "native_bf16", lambda: native)
    assert bytes_of(large) > LARGE_MODEL_BYTES > bytes_of(small)
    fast = torch.bfloat16 if native else None
    assert autocast_dtype(None, CPU, large) == fast  # predict's default
    assert autocast_dtype(None, CPU, small) is None  # MobileNetV2-sized: float32
    assert autocast_dtype(False, CPU, large) is None  # eval's default, --no-amp
    assert autocast_dtype(True, CPU, small) == torch.bfloat16  # --amp asks for it
    assert autocast_dtype(None, CUDA, small) == torch.float16  # as before on CUDA
    assert autocast_dtype(False, CUDA, large) is None
    assert (PredictConfig().amp, EvalConfig().amp) == (None, False)


def test_auto_runs_a_bf16_model_on_openvino_else_torch(monkeypatch, large, small) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    auto = InferenceConfig(backend="auto", device="cpu")
    monkeypatch.setattr(extras, "native_bf16", lambda: True)
    installed = extras.backend_installed
    openvino = installed("openvino")
    assert plan_backend(large, auto)[0] == ("openvino" if openvino else "torch")
    assert plan_backend(large, auto.replace(amp=False))[0] == "onnxruntime"  # eval: float32
    assert plan_backend(small, auto)[0] == "onnxruntime"
    monkeypatch.setattr(extras, "backend_installed", lambda b: b != "openvino" and installed(b))
    assert plan_backend(large, auto)[0] == "torch"  # no OpenVINO: torch's bfloat16
    monkeypatch.setattr(extras, "native_bf16", lambda: False)
    assert plan_backend(large, auto)[0] == "onnxruntime"


def test_a_bf16_segmenter_runs_bfloat16_and_stays_close_to_float32(monkeypatch, large) -> None:
    """The network really runs in bfloat16 (its logits move), the masks stay close."""
    monkeypatch.setattr(extras, "native_bf16", lambda: True)
    image = torch.Generator().manual_seed(1)
    rgb = (torch.rand(3, 97, 129, generator=image) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    fast = Segmenter(large, device="cpu", backend="torch")
    exact = Segmenter(large, device="cpu", backend="torch", amp=False)
    assert (fast.autocast, exact.autocast) == (torch.bfloat16, None)
    assert (fast.precision, exact.precision) == ("bfloat16", "float32")
    p_fast, p_exact = fast.probabilities(rgb), exact.probabilities(rgb)
    assert 0 < (p_fast - p_exact).abs().max() < 0.2
    assert (p_fast.argmax(0) == p_exact.argmax(0)).float().mean() > 0.9


def test_openvino_runs_a_bf16_model_in_bfloat16(monkeypatch, tmp_path, large) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    real = extras.native_bf16()
    monkeypatch.setenv("DEEPLAB_EXPORT_CACHE", str(tmp_path))
    monkeypatch.setattr(extras, "native_bf16", lambda: True)
    fast = Segmenter(large, device="cpu", backend="openvino")
    exact = Segmenter(large, device="cpu", backend="openvino", amp=False)
    assert (fast.precision, exact.precision) == ("bfloat16", "float32")

    def hint(segmenter) -> str:
        compiled = segmenter.network.runtime.compiled
        return str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()

    assert "float32" in hint(exact)
    if real:  # (elsewhere the CPU plugin runs f32 whatever it is asked)
        assert "bfloat16" in hint(fast)
