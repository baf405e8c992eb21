"""``deeplabcli.export``: what the written file holds (graph shapes, names, metadata), the output
stride and static-size options, OpenVINO IR, and int8 calibration on folders and data sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from support.export_data import tiny_model
from support.threads import one_thread  # noqa: F401 - applies to this module

from deeplabcli import build_model, export
from deeplabcli.exporting.api import describe_export, read_export_metadata
from deeplabcli.runtimes.exported import load_exported
from deeplabcli.runtimes.metadata import parse_metadata
from deeplabcli.runtimes.sessions import OnnxRuntimeNetwork

ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra")


@pytest.fixture(scope="module")
def tiny():
    """A random tiny ResNet DeepLab (OS 16, resize "none", 21 classes)."""
    return tiny_model("deeplabv3_tiny")


def graph_dims(path: Path) -> tuple[list, list]:
    """The declared dims of the graph's input and output: ints or symbolic names."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in (graph.input[0], graph.output[0])]  # fmt: skip
    return dims[0], dims[1]


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x))["out"].numpy()


def test_a_float_export_has_dynamic_shapes_names_and_our_metadata(tmp_path, tiny) -> None:
    path = export(tiny, tmp_path / "tiny.onnx", progress=False)
    assert path == tmp_path / "tiny.onnx" and sorted(p.name for p in tmp_path.iterdir()) == [
        "tiny.onnx"
    ]  # nothing else: the staging folder is gone
    inputs, outputs = graph_dims(path)
    assert inputs == ["batch", 3, "height", "width"]
    assert [outputs[i] for i in (0, 2, 3)] == ["batch", "height", "width"]  # C: see below
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["deeplabcli.int8"] == "false" and meta["deeplabcli.static_size"] == ""
    assert meta["deeplabcli.architecture"] == "deeplabv3_tiny"
    assert meta["deeplabcli.output_stride"] == "16"
    assert len(json.loads(meta["deeplabcli.classes"])) == 21
    assert json.loads(meta["deeplabcli.palette"])[1] == [128, 0, 0]  # VOC's aeroplane colour
    prep = json.loads(meta["deeplabcli.preprocessing"])
    assert (prep["input"], prep["output"], prep["resize"]) == ("pixels", "logits", "none")
    assert prep["mean"] == list(tiny.config.preprocessing.mean)
    info = parse_metadata(meta, "tiny.onnx")
    assert info.config == tiny.config and info.provenance["export"]["opset"] == 17
    for shape in ((1, 3, 64, 48), (2, 3, 33, 70)):  # any N, H, W
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        out = session.run(None, {"pixels": x})[0]
        assert out.shape == (shape[0], 21, *shape[2:])
        assert np.abs(out - torch_logits(tiny, x)).max() <= 1e-3


def test_os_8_export_equals_the_model_switched_to_os_8(tmp_path, tiny) -> None:
    assert tiny.output_stride == 16
    path = export(tiny, tmp_path / "os8.onnx", output_stride=8, progress=False)
    assert tiny.output_stride == 16  # the caller's model is left as it was
    x = np.random.default_rng(1).standard_normal((1, 3, 97, 130)).astype(np.float32)
    at_8 = build_model("deeplabv3_tiny").eval()
    at_8.load_state_dict(tiny.state_dict())
    at_8.set_output_stride(8)
    got = OnnxRuntimeNetwork(path)(x)
    assert np.abs(got - torch_logits(at_8, x)).max() <= 1e-3
    assert np.abs(got - torch_logits(tiny, x)).max() > 1e-2  # OS 16 differs: the switch took
    exported = load_exported(path)
    assert exported.output_stride == 8 and exported.config.output_stride == 8


def test_static_size_fixes_h_and_w(tmp_path, tiny) -> None:
    path = export(tiny, tmp_path / "static.onnx", static_size=(257, 257), progress=False)
    assert graph_dims(path)[0] == ["batch", 3, 257, 257]  # N stays dynamic
    assert load_exported(path).info.static_size == (257, 257)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 257, 257)).astype(np.float32)
    assert np.abs(session.run(None, {"pixels": x})[0] - torch_logits(tiny, x)).max() <= 1e-3
    with pytest.raises(Exception, match=r"Got invalid dimensions for input: pixels"):
        session.run(None, {"pixels": np.zeros((1, 3, 200, 257), np.float32)})
    assert "(N, 3, 257, 257), static H, W" in describe_export(path)


def test_openvino_ir_is_the_xml_and_bin_with_the_same_metadata(tmp_path, tiny) -> None:
    pytest.importorskip("openvino", reason="needs the openvino extra")
    onnx_path = export(tiny, tmp_path / "m.onnx", progress=False)
    xml = export(tiny, tmp_path / "ir" / "m.xml", progress=False)  # a new folder is made
    assert sorted(p.name for p in xml.parent.iterdir()) == ["m.bin", "m.xml"]
    ours, theirs = read_export_metadata(onnx_path), read_export_metadata(xml)
    provenance = [json.loads(m.pop("deeplabcli.provenance")) for m in (ours, theirs)]
    assert ours == theirs and provenance[0]["export"]["format"] == "onnx"
    model = load_exported(xml)
    assert model.backend == "openvino" and model.config == tiny.config
    x = np.random.default_rng(2).standard_normal((1, 3, 50, 61)).astype(np.float32)
    assert np.abs(model.network(x) - torch_logits(tiny, x)).max() <= 1e-3
    line = describe_export(xml)
    assert line.startswith(f"wrote {xml} + m.bin (") and "OpenVINO IR (ONNX opset 17)" in line


def photos_folder(root: Path, count: int, size=(40, 56)) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        (root / "sub").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / ("sub" if i % 2 else ".") / f"p{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_int8_from_a_folder_of_photos(tmp_path, tiny, capsys) -> None:
    photos = photos_folder(tmp_path / "photos", 6)
    path = export(tiny, tmp_path / "q.onnx", int8=True, calibrate=photos, calibration_images=4,
                  progress=True)  # fmt: skip
    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    info = load_exported(path).info
    assert info.int8 is True
    record = info.provenance["export"]["int8"]
    assert record["quantizer"] == "onnxruntime" and record["settings"]["quant_format"] == "QDQ"
    assert record["calibration"] == {"source": str(photos), "images": 4, "available": 6,
                                     "labelled": False}  # fmt: skip
    err = capsys.readouterr().err
    assert "calibrating int8" in err and "mIoU" not in err  # no labels, no mIoU
    assert "WARNING" not in err  # ONNX Runtime's "consider pre-processing" stays quiet
    assert "int8 (calibrated on 4 images)" in describe_export(path)
    x = np.random.default_rng(3).standard_normal((1, 3, 40, 56)).astype(np.float32)
    float_logits = torch_logits(tiny, x)
    int8_logits = OnnxRuntimeNetwork(path)(x)
    assert np.corrcoef(float_logits.ravel(), int8_logits.ravel())[0, 1] > 0.9


def labelled_folder(root: Path, count: int) -> Path:
    """A custom data set (images/, masks/, classes.txt) with 21 classes."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(21)) + "\n")
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        Image.fromarray(rng.integers(0, 21, (36, 44), dtype=np.uint8)).save(
            root / "masks" / f"{i}.png"
        )
    return root


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_with_labels_prints_float_and_int8_miou(tmp_path, tiny, capsys, fmt) -> None:
    if fmt == "openvino":
        pytest.importorskip("nncf", reason="needs the openvino extra")
    data = labelled_folder(tmp_path / "data", 3)
    out = tmp_path / ("q.onnx" if fmt == "onnx" else "q.xml")
    path = export(tiny, out, int8=True, calibrate=data, progress=True)
    calibration = load_exported(path).info.provenance["export"]["int8"]["calibration"]
    assert calibration["labelled"] is True and calibration["images"] == 3
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout holds results only: no progress bars of the quantisers
    assert "WARNING" not in captured.err and "CUDA" not in captured.err
    line = next(x for x in captured.err.splitlines() if x.startswith("mIoU"))
    assert line == (
        f"mIoU on the 3 labelled calibration images: float {100 * calibration['miou_float']:.2f}%, "
        f"int8 {100 * calibration['miou_int8']:.2f}% "
        f"({100 * (calibration['miou_int8'] - calibration['miou_float']):+.2f} points)."
    )
    expected = ["q.onnx"] if fmt == "onnx" else ["q.bin", "q.xml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", *expected]


@pytest.mark.parametrize("size", [(257, 257), (129, 97), (130, 96)])
def test_a_static_mobilenetv2_export_has_no_pad_nodes_and_the_same_logits(tmp_path, size) -> None:
    """At a static size the TF "SAME" padding is worked out once: symmetric pads sit in the
    Conv (int8 runtimes ran Pad nodes in float between requantisations), and the logits equal
    the dynamic graph's and torch's at that size."""
    model = tiny_model("deeplabv3_mobilenetv2_tiny")
    static = export(model, tmp_path / "static.onnx", static_size=size, progress=False)
    dynamic = export(model, tmp_path / "dynamic.onnx", progress=False)
    kinds = [node.op_type for node in onnx.load(str(static)).graph.node]
    dynamic_kinds = [node.op_type for node in onnx.load(str(dynamic)).graph.node]
    assert "Pad" in dynamic_kinds  # stride-2 pads follow the input's size there
    odd = all(side % 2 for side in size)  # odd sides keep odd: every "SAME" pad is symmetric
    assert ("Pad" not in kinds) == odd
    x = np.random.default_rng(1).standard_normal((1, 3, *size)).astype(np.float32)
    outs = [OnnxRuntimeNetwork(p, keep_optimized=False)(x) for p in (static, dynamic)]
    assert np.abs(outs[0] - outs[1]).max() <= 1e-4
    assert np.abs(outs[0] - torch_logits(model, x)).max() <= 1e-3


def test_calibration_counts_every_image(tmp_path, tiny) -> None:
    """Every calibration image's ranges count (ONNX Runtime 1.32 drops each full chunk of
    ``CalibMaxIntermediateOutputs`` without merging it, and fails on a multiple of it): an
    extreme first image of 9 (or 8) widens the input's int8 range."""
    from onnx import numpy_helper

    from deeplabcli.exporting.quantize import quantize_onnx

    float_path = export(tiny, tmp_path / "float.onnx", progress=False)
    rng = np.random.default_rng(0)
    for count in (8, 9):
        inputs = [rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32) for _ in range(count)]
        inputs[0] *= 10  # only the first image reaches ±10
        out = quantize_onnx(float_path, tmp_path / f"int8_{count}.onnx", inputs, progress=False)
        graph = onnx.load(str(out)).graph
        scales = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        node = next(
            n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "pixels"
        )
        assert float(scales[node.input[1]]) * 255 >= 19.0, count  # the range spans about ±10
