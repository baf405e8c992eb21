"""Packed (affine-quantised) weights: stored as codes + scales, loaded back bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deeplabcli import build_model, load_model
from deeplabcli.errors import ModelLoadError
from deeplabcli.weights.convert.tflite_graph import dequantize
from deeplabcli.weights.packed import is_packed, pack_weight, save_packed, unpack


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def quantized_like(weight: torch.Tensor, dtype: type, per_channel: bool, seed: int):
    """(codes, scale, zero_point) of a random affine quantisation of ``weight``'s shape."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    codes = rng.integers(info.min, info.max + 1, size=tuple(weight.shape)).astype(dtype)
    channels = weight.shape[0] if per_channel else 1
    scale = rng.uniform(1e-4, 0.05, size=channels)
    zero = rng.integers(0, 255, size=channels) if dtype is np.uint8 else np.zeros(channels, int)
    return codes, scale, zero


def test_unpack_uses_the_tflite_converters_arithmetic_bit_for_bit() -> None:
    for dtype, per_channel, seed in ((np.uint8, False, 0), (np.int8, True, 1), (np.uint8, True, 2)):
        codes, scale, zero = quantized_like(torch.empty(6, 3, 3, 3), dtype, per_channel, seed)
        tensors = pack_weight("conv.weight", codes, scale, zero)
        assert sorted(tensors) == ["conv.weight.qcodes", "conv.weight.qscale", "conv.weight.qzero"]
        assert is_packed(tensors) and not is_packed({"conv.weight": torch.zeros(1)})
        restored = unpack({**tensors, "conv.bias": torch.arange(6.0)}, "test")
        expected = dequantize(codes, scale, zero, axis=0)  # what from_tflite computes
        assert restored["conv.weight"].dtype == torch.float32
        assert bits(restored["conv.weight"]) == expected.tobytes()
        assert torch.equal(restored["conv.bias"], torch.arange(6.0))  # plain tensors as stored


def test_a_model_saved_packed_loads_back_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenetv2_tiny", num_classes=3).eval()
    key = "head.classifier.weight"
    codes, scale, zero = quantized_like(model.state_dict()[key], np.uint8, True, 3)
    with torch.no_grad():  # make the model's tensor exactly what the codes mean
        model.head.classifier.weight.copy_(torch.from_numpy(dequantize(codes, scale, zero, 0)))
    path = tmp_path / "tiny.safetensors"
    save_packed(model, {key: (codes, scale, zero)}, path, {"source": "test"})
    loaded = load_model(path)  # a packed file is an ordinary model reference
    assert loaded.config == model.config and loaded.provenance["source"] == "test"
    for name, tensor in model.state_dict().items():
        assert bits(loaded.state_dict()[name]) == bits(tensor), name
    x = torch.randn(1, 3, 33, 33)
    with torch.inference_mode():
        assert torch.equal(loaded(x)["out"], model(x)["out"])


def test_the_bytes_depend_only_on_the_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenetv2_tiny", num_classes=3).eval()
    save_packed(model, {}, tmp_path / "a.safetensors", {"source": "test"})
    save_packed(model, {}, tmp_path / "b.safetensors", {"source": "test"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_codes_that_do_not_match_the_model_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenetv2_tiny", num_classes=3).eval()
    key = "head.classifier.weight"
    codes = quantized_like(model.state_dict()[key], np.uint8, False, 4)  # random: not the weight
    with pytest.raises(ValueError, match=r"packing changes head\.classifier\.weight"):
        save_packed(model, {key: codes}, tmp_path / "x.safetensors", {})
    assert not list(tmp_path.iterdir())


def test_a_damaged_packed_file_is_one_clear_error(tmp_path: Path) -> None:
    codes, scale, zero = quantized_like(torch.empty(4, 2, 1, 1), np.uint8, True, 5)
    tensors = pack_weight("head.classifier.weight", codes, scale, zero)
    del tensors["head.classifier.weight.qscale"]
    path = tmp_path / "damaged.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelLoadError) as error:
        load_model(path)
    assert str(error.value) == (
        f"{path}: packed weight 'head.classifier.weight' lacks its scale or zero point. "
        "The file is damaged; re-create it."
    )
    floats = {**pack_weight("w", codes, scale, zero), "w.qcodes": torch.zeros(4, 2, 1, 1)}
    with pytest.raises(ModelLoadError, match=r"'w' has torch\.float32 codes instead of uint8"):
        unpack(floats, "x")
    tensors = pack_weight("w", codes, scale, zero)
    tensors["w.qscale"] = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ModelLoadError, match="has 3 scales and 4 zero points for 4 channels"):
        unpack(tensors, "x")
    with pytest.raises(ModelLoadError, match=r"v\.qzero belong to no packed weight"):
        unpack({"v.qzero": torch.zeros(1, dtype=torch.int64)}, "x")
