"""The issue's parity acceptance: exported ONNX (run in ONNX Runtime) and OpenVINO IR (run in
OpenVINO) give our torch model's logits on real VOC val images, at each image's own network
input size, from one export per model (dynamic shapes).

The OpenVINO IR is converted from the same ONNX export (what ``export(..., "m.xml")`` does;
tests/exporting/test_export.py checks that path). Models: Google's float and uint8 TFLite MobileNetV2 (resize "fit": 257² and 513² canvases), and
random tiny ResNet and MobileNetV2 DeepLabs with resize "none" (each image at its own H × W).
The fast tests use the first 8 val images; the slow ones all 120.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.export_data import tiny_model, torch_logits, val_ids, val_images

from deeplabcli import export
from deeplabcli.exporting.openvino import onnx_to_openvino
from deeplabcli.runtimes.sessions import OnnxRuntimeNetwork, OpenVinoNetwork
from deeplabcli.weights.resolve import load_model

pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytest.importorskip("openvino", reason="needs the openvino extra")

MAX_LOGIT_DIFF = 1e-3
MIN_ARGMAX_AGREEMENT = 0.999
RUNTIMES = {"onnxruntime": OnnxRuntimeNetwork, "openvino": OpenVinoNetwork}


LOADERS = {
    "mv_gpu_257": lambda request: load_model(request.getfixturevalue("tflite_float_path")),
    "mnv2_quant_513": lambda request: load_model(request.getfixturevalue("tflite_quant_path")),
    "tiny_resnet": lambda request: tiny_model("deeplabv3_tiny"),
    "tiny_mobilenetv2": lambda request: tiny_model("deeplabv3_mobilenetv2_tiny"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """``get(name, runtime, request)`` → (torch model, runtime network, torch logits cache),
    made on first use and kept for the module: one ``export`` to ONNX per model, whose graph
    OpenVINO IR is converted from (as ``export(..., "m.xml")`` does), and the torch logits of
    each image computed once for both runtimes."""
    done: dict = {}

    def get(name: str, runtime: str, request: pytest.FixtureRequest):
        if name not in done:
            model = LOADERS[name](request)
            onnx = export(model, tmp_path_factory.mktemp(name) / "model.onnx", progress=False)
            done[name] = {"model": model, "onnx": onnx, "logits": {}}
        entry = done[name]
        if runtime not in entry:
            path = entry["onnx"]
            if runtime == "openvino":
                path = onnx_to_openvino(path, path.with_suffix(".xml"))
            entry[runtime] = RUNTIMES[runtime](path, threads=2)
        return entry["model"], entry[runtime], entry["logits"]

    return get


def check_parity(entry, voc_root: Path, ids: list[str]) -> dict:
    """Run torch and the runtime over the val images ``ids``; assert the thresholds; return
    the figures."""
    model, network, cache = entry
    worst, agree, pixels, shapes = 0.0, 0, 0, set()
    for image in val_images(voc_root, model.config.preprocessing, ids):
        if image.id not in cache:
            cache[image.id] = torch_logits(model, image.pixels)
        ours = cache[image.id]
        theirs = network(image.pixels)
        assert theirs.shape == ours.shape, image.id
        worst = max(worst, float(np.abs(theirs - ours).max()))
        agree += int((theirs[0].argmax(0) == ours[0].argmax(0)).sum())
        pixels += ours.shape[2] * ours.shape[3]
        shapes.add(image.pixels.shape[2:])
    figures = {"max_diff": worst, "agreement": agree / pixels, "input_sizes": len(shapes)}
    print(figures)
    assert worst <= MAX_LOGIT_DIFF, figures
    assert agree / pixels >= MIN_ARGMAX_AGREEMENT, figures
    return figures


FAST = [
    ("tiny_resnet", "onnxruntime"),
    ("tiny_resnet", "openvino"),
    ("tiny_mobilenetv2", "onnxruntime"),
    ("tiny_mobilenetv2", "openvino"),
    ("mv_gpu_257", "onnxruntime"),
]


@pytest.mark.parametrize(("name", "runtime"), FAST)
def test_exports_agree_with_torch_on_8_val_images(
    exported, voc_root, request, name, runtime
) -> None:
    entry = exported(name, runtime, request)
    ids = val_ids(voc_root, 8, distinct_sizes=True)
    figures = check_parity(entry, voc_root, ids)
    if entry[0].config.preprocessing.resize == "none":  # dynamic H and W: 8 input sizes
        assert figures["input_sizes"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize(
    "name", ["mv_gpu_257", "mnv2_quant_513", "tiny_resnet", "tiny_mobilenetv2"]
)
def test_exports_agree_with_torch_on_120_val_images(
    exported, voc_root, request, name, runtime
) -> None:
    entry = exported(name, runtime, request)
    ids = val_ids(voc_root)
    assert len(ids) == 120
    figures = check_parity(entry, voc_root, ids)
    if entry[0].config.preprocessing.resize == "none":
        assert figures["input_sizes"] >= 20
