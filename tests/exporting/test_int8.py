"""The int8 acceptance: Google's uint8 MobileNetV2 exported with ``--int8``, calibrated on 100
VOC trainaug images (none of them val images), keeps its mIoU on the 120 val images within 0.01
of the float model on torch, for ONNX Runtime's quantiser and for NNCF's (OpenVINO IR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deeplabcli.cli import main
from deeplabcli.runtimes.exported import load_exported

pytest.importorskip("onnxruntime", reason="needs the onnx extra")


def deeplab(*args) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


def val_miou(voc_root: Path, model: Path, *options: str) -> float:
    result = deeplab("eval", "--dataset", "voc", "--data-root", voc_root.parent, "--split", "val",
                     "--model", model, "--json", "-q", *options)  # fmt: skip
    report = json.loads(result.stdout)
    assert report["images"] == 120
    return report["miou"]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_int8_keeps_the_val_miou_within_0_01(tmp_path, voc_root, tflite_quant_path, suffix):
    if suffix == ".xml":
        pytest.importorskip("nncf", reason="--int8 --format openvino needs nncf")
    sets = voc_root / "ImageSets" / "Segmentation"
    trainaug, val = (set((sets / f"{n}.txt").read_text().split()) for n in ("trainaug", "val"))
    assert len(trainaug) == 400 and not trainaug & val  # calibration never sees val images
    out = tmp_path / f"int8{suffix}"
    result = deeplab("export", tflite_quant_path, "-o", out, "--int8", "--calibrate",
                     "voc:trainaug", "--data-root", voc_root.parent)  # fmt: skip
    assert "calibrating int8" in result.stderr
    assert "mIoU on the 100 labelled calibration images: float " in result.stderr
    info = load_exported(out).info
    assert info.int8 and info.provenance["export"]["int8"]["calibration"]["images"] == 100
    float_miou = val_miou(voc_root, tflite_quant_path, "--backend", "torch")
    int8_miou = val_miou(voc_root, out)
    print(f"{suffix}: VOC val mIoU float (torch) {float_miou:.4f}, int8 {int8_miou:.4f}, "
          f"change {int8_miou - float_miou:+.4f}")  # fmt: skip
    assert abs(int8_miou - float_miou) <= 0.01
