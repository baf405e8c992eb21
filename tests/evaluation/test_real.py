"""``deeplab eval`` on real VOC val images with Google's float TFLite model, against Google's own
runtime (``ai-edge-litert``) with Google's preprocessing on the same images.

The reference: resize the long side to 257 (bilinear), pad with the mean to 257×257, scale
(x − 127.5) / 127.5, run the interpreter, take the logits' valid region, resize it to the image
size (bilinear), argmax; confusion matrix over 21 classes, 255 ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.nn import functional as F

from deeplabcli.cli import main
from deeplabcli.evaluation.metrics import compute_metrics, confusion_matrix

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert")

SIDE = 257


def google_confusion(voc_root: Path, model_path: Path) -> np.ndarray:
    """The reference confusion matrix (21, 21) over VOC val."""
    it = litert.Interpreter(model_path=str(model_path), num_threads=2)
    it.allocate_tensors()
    source, target = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    cm = np.zeros((21, 21), dtype=np.int64)
    for image_id in ids:
        image = Image.open(voc_root / "JPEGImages" / f"{image_id}.jpg").convert("RGB")
        width, height = image.size
        ratio = SIDE / max(width, height)
        w, h = max(1, round(width * ratio)), max(1, round(height * ratio))
        canvas = np.full((SIDE, SIDE, 3), 127.5, dtype=np.float32)
        canvas[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32)
        it.set_tensor(source, ((canvas - 127.5) / 127.5)[None])
        it.invoke()
        logits = torch.from_numpy(it.get_tensor(target)[0, :h, :w].copy()).permute(2, 0, 1)
        full = F.interpolate(logits[None], size=(height, width), mode="bilinear")[0]
        label = np.array(Image.open(voc_root / "SegmentationClass" / f"{image_id}.png"))
        cm += confusion_matrix(label, full.argmax(0).numpy(), 21)
    return cm


def deeplab_eval(voc_root: Path, model_path: Path, *options: str) -> dict:
    args = ["eval", "--dataset", "voc", "--data-root", str(voc_root.parent), "--split", "val",
            "--model", str(model_path), "--json", "-q", "--batch-size", "8", *options]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_eval_matches_googles_runtime_on_voc_val(voc_root: Path, tflite_float_path: Path):
    ours = deeplab_eval(voc_root, tflite_float_path)
    reference = compute_metrics(google_confusion(voc_root, tflite_float_path))
    print(f"VOC val, 120 images: deeplab eval mIoU {ours['miou']:.4f}, "
          f"Google TFLite runtime {reference.miou:.4f}")  # fmt: skip
    assert ours["images"] == 120 and (ours["os"], ours["flip"]) == (8, False)
    assert ours["miou"] >= reference.miou - 0.01
    assert ours["pixel_accuracy"] >= reference.pixel_accuracy - 0.01
    assert {"aeroplane", "boat", "train"} <= set(ours["absent_classes"])  # not in this slice
    assert [c for c, v in ours["per_class_iou"].items() if v is None] == ours["absent_classes"]


@pytest.mark.slow
def test_multiscale_and_flip_do_not_collapse(voc_root: Path, tflite_float_path: Path):
    single = deeplab_eval(voc_root, tflite_float_path)
    both = deeplab_eval(voc_root, tflite_float_path, "--scales", "0.5,0.75,1,1.25,1.5,1.75",
                        "--flip")  # fmt: skip
    print(f"mIoU single scale {single['miou']:.4f}, six scales + flip {both['miou']:.4f}")
    assert both["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and both["flip"] is True
    assert both["miou"] >= single["miou"] - 0.02
