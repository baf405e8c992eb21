"""Google's DeepLab MobileNetV2 TFLite models → our model, checked against the TFLite interpreter.

The real models and VOC images live in ../shared/data (skipped where absent). Synthetic graphs
written by ``tflite_writer`` cover what the two real models do not: other depth multipliers and
output strides, even input sizes (asymmetric SAME padding), int8 per-channel quantization,
align_corners=False, and graphs that are not DeepLab.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplabcli import ModelConfig, build_model
from deeplabcli.config import VOC_CLASSES
from deeplabcli.errors import ConversionError, MissingDependencyError
from deeplabcli.weights.convert import from_tflite
from deeplabcli.weights.convert.tflite import match_deeplab
from deeplabcli.weights.convert.tflite_graph import read_graph

pytest.importorskip("tflite")
litert = pytest.importorskip("ai_edge_litert.interpreter")

from support.tflite_writer import FLOAT32, DeepLabExporter, GraphWriter  # noqa: E402


def val_ids(voc_root: Path, limit: int | None = None) -> list[str]:
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return ids[:limit]


def google_input(image_path: Path, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Google's DeepLab preprocessing up to the uint8 canvas: the long side resized to ``side``
    (bilinear), pasted top-left on a ``side × side`` canvas of the mean colour (128, the value
    that maps to 0 in [-1, 1]). Returns (uint8 (side, side, 3), valid (h, w))."""
    image = Image.open(image_path).convert("RGB")
    ratio = side / max(image.size)
    w, h = (max(1, round(v * ratio)) for v in image.size)
    resized = np.asarray(image.resize((w, h), Image.BILINEAR))
    canvas = np.full((side, side, 3), 128, dtype=np.uint8)
    canvas[:h, :w] = resized
    return canvas, (h, w)


def google_batches(voc_root: Path, ids: list[str], side: int, size: int):
    """Yield (uint8 canvases (B, side, side, 3), valid (h, w) per image) for ``ids``."""
    for start in range(0, len(ids), size):
        items = [
            google_input(voc_root / "JPEGImages" / f"{i}.jpg", side)
            for i in ids[start : start + size]
        ]
        yield np.stack([canvas for canvas, _ in items]), [hw for _, hw in items]


def interpreter(path: Path):
    it = litert.Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    return it


def run_interpreter(it, x: np.ndarray) -> np.ndarray:
    """The interpreter's output for each image of the batch ``x`` (it takes one at a time)."""
    index = it.get_input_details()[0]["index"]
    results = []
    for image in x:
        it.set_tensor(index, image[None])
        it.invoke()
        results.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    return np.stack(results)


def ours_nhwc(model, x: np.ndarray) -> np.ndarray:
    """Our logits (B, H, W, C) for an NHWC float batch."""
    with torch.inference_mode():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2))["out"]
    return out.permute(0, 2, 3, 1).numpy()


class Agreement:
    """Argmax agreement counted over whole canvases and over the image regions."""

    def __init__(self) -> None:
        self.same = self.total = self.valid_same = self.valid_total = 0

    def add(self, ours: np.ndarray, theirs: np.ndarray, valid: list[tuple[int, int]]) -> None:
        same = ours == theirs  # (B, H, W)
        self.same += int(same.sum())
        self.total += same.size
        for plane, (h, w) in zip(same, valid, strict=True):
            self.valid_same += int(plane[:h, :w].sum())
            self.valid_total += h * w

    @property
    def whole(self) -> float:
        return self.same / self.total

    @property
    def image(self) -> float:
        return self.valid_same / self.valid_total


# ----------------------------------------------------------------------------- real models
def test_float_model_matches_interpreter_on_voc_val(tflite_float_path, voc_root):
    model = from_tflite(tflite_float_path)
    it = interpreter(tflite_float_path)
    ids = val_ids(voc_root)
    assert len(ids) == 120
    worst, agreement = 0.0, Agreement()
    for canvases, valid in google_batches(voc_root, ids, 257, size=8):
        x = canvases.astype(np.float32) / 127.5 - 1.0  # (x − 127.5) / 127.5
        for image, (h, w) in zip(x, valid, strict=True):
            image[h:, :] = 0.0  # the padding is the mean, exactly 0 in [-1, 1]
            image[:, w:] = 0.0
        expected, ours = run_interpreter(it, x), ours_nhwc(model, x)
        worst = max(worst, float(np.abs(ours - expected).max()))
        agreement.add(ours.argmax(-1), expected.argmax(-1), valid)
    print(f"float 257: max-abs {worst:.2e}, argmax agreement {agreement.whole:.6f} "
          f"(image region {agreement.image:.6f})")  # fmt: skip
    assert worst <= 1e-3
    assert agreement.whole >= 0.999 and agreement.image >= 0.999


@pytest.mark.parametrize(
    "count",
    [pytest.param(20, id="20-images"), pytest.param(120, id="120-images", marks=pytest.mark.slow)],
)
def test_quantized_model_agrees_with_interpreter_argmax(tflite_quant_path, voc_root, count):
    model = from_tflite(tflite_quant_path)
    it = interpreter(tflite_quant_path)
    agreement = Agreement()
    for canvases, valid in google_batches(voc_root, val_ids(voc_root, count), 513, size=4):
        expected = run_interpreter(it, canvases)  # (B, 513, 513) int64 class maps
        x = (canvases.astype(np.float32) - 128.0) / 128.0  # the input's uint8 quantization
        agreement.add(ours_nhwc(model, x).argmax(-1), expected, valid)
    print(f"uint8 513, {count} images: argmax agreement {agreement.whole:.4f} "
          f"(image region {agreement.image:.4f})")  # fmt: skip
    assert agreement.whole >= 0.97 and agreement.image >= 0.97


def test_float_model_graph_is_read_not_assumed(tflite_float_path):
    found = match_deeplab(read_graph(tflite_float_path))
    config = found.config()
    assert (config.depth_multiplier, config.depth_divisible_by) == (0.5, 1)
    assert config.output_stride == 8 and config.folded_bn and config.tf_padding
    assert config.align_corners is True
    assert config.num_classes == 21 and config.class_names == VOC_CLASSES
    assert config.head_channels == 256
    assert config.preprocessing.resize == "fit" and config.preprocessing.size == 257
    assert config.preprocessing.mean == (0.5,) * 3 and config.preprocessing.std == (0.5,) * 3
    assert found.pool_first and found.output == "logits"
    assert [b.depthwise.options["dilation"][0] for b in found.blocks] == [1] * 7 + [2] * 7 + [4] * 3
    assert found.channels()[-1] == (80, 480, 160)  # unrounded: 0.5 × (160, 960, 320)
    assert [b.residual for b in found.blocks].count(True) == 10


def test_quantized_weights_are_dequantized_exactly(tflite_quant_path):
    import tflite

    model = from_tflite(tflite_quant_path)
    config = model.config
    assert (config.depth_multiplier, config.depth_divisible_by, config.output_stride) == (
        1.0,
        8,
        16,
    )
    assert model.backbone.block_dilations() == [1] * 14 + [2] * 3
    # Read the stem conv straight from the flatbuffer: uint8 weights, int32 bias.
    buf = tflite_quant_path.read_bytes()
    graph = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0)
    op = graph.Operators(0)
    x, w, b = (graph.Tensors(int(i)) for i in op.InputsAsNumpy())
    buffers = tflite.Model.GetRootAsModel(buf, 0)
    q = buffers.Buffers(w.Buffer()).DataAsNumpy().reshape(32, 3, 3, 3).astype(np.float64)
    wq, xq = w.Quantization(), x.Quantization()
    weight = (q - wq.ZeroPointAsNumpy()[0]) * wq.ScaleAsNumpy()[0]
    qb = buffers.Buffers(b.Buffer()).DataAsNumpy().view(np.int32).astype(np.float64)
    bias = qb * (float(xq.ScaleAsNumpy()[0]) * float(wq.ScaleAsNumpy()[0]))
    stem = model.backbone.stem.conv
    expected = torch.from_numpy(weight.transpose(0, 3, 1, 2).astype(np.float32))
    assert torch.equal(stem.weight, expected)
    assert torch.equal(stem.bias, torch.from_numpy(bias.astype(np.float32)))


def test_converted_config_round_trips_through_json(tflite_float_path):
    model = from_tflite(tflite_float_path)
    restored = ModelConfig.from_json(model.config.to_json())
    assert restored == model.config
    rebuilt = build_model(restored).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)["out"], model(x)["out"])


# ----------------------------------------------------------------------------- synthetic graphs
def random_folded_model(**overrides):
    """Our tiny MobileNetV2 DeepLab with folded BN and He-scaled random weights (so activations
    neither die out nor saturate over 17 blocks), random biases, eval mode."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenetv2_tiny", folded_bn=True, num_classes=5, **overrides)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize(
    ("overrides", "size", "align_corners", "layout"),
    [
        pytest.param({}, (65, 65), True, {}, id="dm0.25-os8-odd"),
        pytest.param(
            {"depth_multiplier": 0.5, "depth_divisible_by": 1, "output_stride": 16},
            (64, 48),
            False,
            {"pool_first": False},
            id="dm0.5-unrounded-os16-even-half-pixel-1x1-first",
        ),
        pytest.param(
            {"depth_multiplier": 0.35, "output_stride": 32},
            (50, 71),
            True,
            {"mean_pool": True},
            id="dm0.35-os32-mean-pooling",
        ),
    ],
)
def test_synthetic_export_runs_like_the_interpreter_and_converts_back(
    tmp_path, overrides, size, align_corners, layout
):
    model = random_folded_model(align_corners=align_corners, **overrides)
    path = DeepLabExporter().export(
        model, tmp_path / "m.tflite", size, align_corners=align_corners, **layout
    )
    found = match_deeplab(read_graph(path))
    assert found.pool_first == layout.get("pool_first", True)
    assert ("MEAN" in {op.kind for op in found.graph.ops}) == layout.get("mean_pool", False)
    converted = from_tflite(path)
    for name in ("depth_multiplier", "depth_divisible_by", "output_stride", "align_corners",
                 "num_classes", "head_channels", "folded_bn", "tf_padding"):  # fmt: skip
        assert getattr(converted.config, name) == getattr(model.config, name), name
    assert converted.config.preprocessing.size == max(size)
    original = model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in converted.state_dict().items())
    it = interpreter(path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, *size, 3)).astype(np.float32)
    expected = run_interpreter(it, x)
    assert expected.std(axis=(0, 1, 2)).min() > 0.1  # logits that vary over the image
    assert np.abs(ours_nhwc(model, x) - expected).max() < 1e-4
    assert np.abs(ours_nhwc(converted, x) - expected).max() < 1e-4


def test_int8_per_channel_weights_and_int32_biases_are_dequantized_exactly(tmp_path):
    model = random_folded_model()
    exporter = DeepLabExporter(int8=True, act_scale=0.05)
    path = exporter.export(model, tmp_path / "int8.tflite", (33, 33), argmax=True)
    found = match_deeplab(read_graph(path))
    assert found.output == "argmax"
    state = from_tflite(path).state_dict()
    original = model.state_dict()
    assert set(exporter.expected) == set(state)
    for key, value in exporter.expected.items():
        assert torch.equal(state[key], torch.from_numpy(value)), key
        # Within half a quantization step of the float weights: scales sit on the right axis.
        weight = original[key.replace(".bias", ".weight")]
        step = weight.flatten(1).abs().amax(1) / 127  # per output channel
        if key.endswith(".bias"):
            step = step * 0.05  # bias scale = input scale × weight scale
        error = (state[key] - original[key]).reshape(len(step), -1).abs()
        assert (error <= step[:, None] / 2 + 1e-6).all(), key


def test_legacy_resize_is_refused(tmp_path):
    model = random_folded_model()
    path = DeepLabExporter().export(
        model, tmp_path / "legacy.tflite", (33, 33), align_corners=False, half_pixel=False
    )
    with pytest.raises(ConversionError, match=r"legacy \(asymmetric\) bilinear mode"):
        from_tflite(path)


def test_a_graph_that_is_not_deeplab_is_a_clear_error(tmp_path):
    w = GraphWriter()
    x = w.tensor("input", [1, 9, 9, 3])
    weight = w.tensor("w", [4, 3, 3, 3], FLOAT32, np.zeros((4, 3, 3, 3), np.float32))
    bias = w.tensor("b", [4], FLOAT32, np.zeros(4, np.float32))
    y = w.tensor("features", [1, 5, 5, 4])
    w.op("CONV_2D", [x, weight, bias], [y], stride=2, activation="RELU6")
    path = w.write(tmp_path / "features.tflite", [x], [y])
    with pytest.raises(ConversionError) as info:
        from_tflite(path)
    assert str(info.value) == (
        f"{path}: the TFLite graph is not a DeepLabv3 MobileNetV2 this converter reads: "
        "expected the convs of block 0, found nothing. Use one of Google's DeepLab MobileNetV2 "
        "exports."
    )


def test_a_constant_with_the_wrong_byte_count_is_reported_as_damage(tmp_path):
    w = GraphWriter()
    x = w.tensor("input", [1, 9, 9, 3])
    weight = w.tensor("w", [4, 3, 3, 3], FLOAT32, np.zeros(10, np.float32))
    y = w.tensor("features", [1, 5, 5, 4])
    w.op("CONV_2D", [x, weight, -1], [y], stride=2, activation="RELU6")
    graph = read_graph(w.write(tmp_path / "short.tflite", [x], [y]))
    with pytest.raises(ConversionError, match=r"'w' holds 40 bytes for shape \[4, 3, 3, 3\]"):
        graph.conv_weights(graph.ops[0])


# ----------------------------------------------------------------------------- errors
def test_a_file_that_is_not_tflite_is_a_clear_error(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_text("this is not a model")
    with pytest.raises(ConversionError, match=r"is not a TensorFlow Lite model \(no TFL3"):
        from_tflite(path)
    with pytest.raises(ConversionError, match=r"cannot read .*missing\.tflite"):
        from_tflite(tmp_path / "missing.tflite")


def test_a_damaged_tflite_file_is_a_clear_error(tflite_float_path, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(tflite_float_path.read_bytes()[:4000])
    with pytest.raises(ConversionError) as info:
        from_tflite(path)
    assert str(info.value) == (  # says what is wrong, not "(error)" (struct.error's name)
        f"{path} is a damaged TensorFlow Lite file (truncated or corrupt: an offset points past "
        "the end of its 4,000 bytes). Export or download it again."
    )


def test_a_damaged_flatbuffer_that_is_not_cut_short_names_the_file(tmp_path):
    w = GraphWriter()
    x = w.tensor("input", [1, 9, 9, 3])
    weight = w.tensor("w", [4, 3, 3, 3], FLOAT32, np.zeros((4, 3, 3, 3), np.float32))
    y = w.tensor("features", [1, 5, 5, 4])
    w.op("CONV_2D", [x, weight, -1], [y], stride=2, activation="RELU6")
    data = bytearray(w.write(tmp_path / "ok.tflite", [x], [y]).read_bytes())
    data[8:64] = b"\xff" * 56  # the root table's offsets now point far outside the file
    path = tmp_path / "scrambled.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ConversionError) as info:
        from_tflite(path)
    assert str(info.value) == (
        f"{path} is a damaged TensorFlow Lite file (truncated or corrupt: an offset points past "
        f"the end of its {len(data):,} bytes). Export or download it again."
    )


def test_missing_tflite_package_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tflite", None)  # import tflite → ImportError
    with pytest.raises(MissingDependencyError) as error:
        from_tflite(tmp_path / "any.tflite")
    assert str(error.value) == (
        "reading TensorFlow Lite models needs the 'tflite' package. Install it from the "
        'deeplabcli checkout with pip install ".[tflite]" (pipx: pipx inject deeplabcli tflite; '
        'from PyPI once published: pip install "deeplabcli[tflite]").'
    )
