"""The peer of ``deeplab predict`` in ``runtime_speed.py``: a plain Python loop over the TFLite
interpreter (XNNPACK) running one of Google's DeepLabv3 ``.tflite`` files, with the same pre-
and post-processing as ours, writing the same palette PNGs with the same writer.

Per image: decode with Pillow (``deeplabcli.data.images.read_image``: EXIF upright, RGB), long
side resized to the model's input side (bilinear, antialiased when shrinking, as ours), padded
at the bottom and right with the mean colour (uint8 128 for the quantised model, whose input is
``(q - 128) / 128``; 0.0 after ``(x - 127.5) / 127.5`` for the float one); invoke; the output
cropped to the image's region and resized to the image size (the quantised model ends in
ArgMax, so its class map is resized nearest; the float model's logits bilinearly, then argmax);
written as a palette PNG with ``deeplabcli.prediction.outputs.write_png(palette_png(...))``.
Nothing here imports torch.

    python benchmarks/_tflite_predict.py MODEL.tflite -o DIR [--threads N] IMAGE...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from deeplabcli.data.images import read_image
from deeplabcli.data.palette import palette_for
from deeplabcli.prediction.outputs import palette_png, write_png


class TFLiteSegmenter:
    """One interpreter; ``classes(rgb uint8 (H, W, 3)) -> uint8 (H, W)`` class map."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        self.input, self.output = inp["index"], self.interpreter.get_output_details()[0]["index"]
        self.side = int(inp["shape"][1])  # square input: (1, S, S, 3)
        self.quantised = inp["dtype"] == np.uint8
        zero = inp["quantization"][1]  # the quantised input is (q - zero) * scale
        self.pad = np.uint8(zero) if self.quantised else np.float32(0.0)

    def classes(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        ratio = self.side / max(height, width)
        h, w = max(1, round(height * ratio)), max(1, round(width * ratio))
        resized = Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR)
        dtype = np.uint8 if self.quantised else np.float32
        canvas = np.full((1, self.side, self.side, 3), self.pad, dtype=dtype)
        pixels = np.asarray(resized)
        canvas[0, :h, :w] = pixels if self.quantised else pixels / np.float32(127.5) - 1
        self.interpreter.set_tensor(self.input, canvas)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output)[0]
        if out.ndim == 2:  # ArgMax inside the graph: (S, S) class indices
            region = Image.fromarray(out[:h, :w].astype(np.uint8))
            return np.asarray(region.resize((width, height), Image.Resampling.NEAREST))
        scores = np.stack(  # (S, S, C) logits → (C, H, W) at the image size
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(out[:h, :w, c]), "F").resize(
                        (width, height), Image.Resampling.BILINEAR
                    )
                )
                for c in range(out.shape[2])
            ]
        )
        return scores.argmax(axis=0).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder of masks")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    segmenter = TFLiteSegmenter(args.model, args.threads)
    palette = palette_for(21)
    as_file = len(args.images) == 1 and args.output.suffix.lower() == ".png"
    for path in args.images:
        mask = segmenter.classes(np.asarray(read_image(path), dtype=np.uint8))
        out = args.output if as_file else args.output / f"{path.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_png(palette_png(mask, palette), out, overwrite=True)


if __name__ == "__main__":
    main()
