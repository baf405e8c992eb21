"""Tiled inference (``--tile``) measured: accuracy of the blends and overlaps, and peak memory.

(a) mIoU on the 120 shared VOC val images with Google's ``deeplabv3_257_mv_gpu.tflite``
    (MobileNetV2 depth 0.5, trained and exported for 257 × 257 inputs): resize-to-fit (the
    model's own protocol, long side → 257) against tiles of 257 at the images' native
    resolution (~500 × 375), for each blend ("falloff" weights, mmseg's count-normalised
    "mean") and overlap.
(b) Peak resident memory of ``deeplab predict`` on a 6000 × 4000 photo (a real photo
    upscaled) with the default model, plain (resized to the model's input) against
    ``--tile 513``; each run in a fresh process, measured with ``getrusage(RUSAGE_CHILDREN)``
    by a wrapper process that runs nothing else.

    python benchmarks/tile_inference.py            # both (~10 min on 2 busy CPU cores)
    python benchmarks/tile_inference.py --skip-miou
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FLOAT_TFLITE = DATA / "models" / "deeplabv3_257_mv_gpu.tflite"
PHOTO = DATA / "photos" / "horses.jpg"

RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)  # KiB on Linux
"""


def miou_table(overlaps: list[float]) -> None:
    from deeplabcli.data import open_dataset
    from deeplabcli.evaluation.protocol import evaluate
    from deeplabcli.weights.resolve import load_model

    model = load_model(FLOAT_TFLITE)
    dataset = open_dataset("voc", str(DATA / "VOCdevkit"), "val")
    runs: list[tuple[str, dict]] = [("resize to fit (257)", {})]
    for overlap in overlaps:
        for blend in ("falloff", "mean"):
            runs.append(
                (f"tiles 257, overlap {overlap:g}, {blend}",
                 {"tile": 257, "tile_overlap": overlap, "tile_blend": blend})
            )  # fmt: skip
    print(f"{'protocol':40s} {'mIoU %':>8s} {'s':>6s}")
    for name, options in runs:
        start = time.perf_counter()
        metrics = evaluate(model, dataset, device="cpu", workers=1, **options)
        seconds = time.perf_counter() - start
        print(f"{name:40s} {100 * metrics.miou:8.2f} {seconds:6.0f}", flush=True)


def peak_rss(tile: int, size: tuple[int, int]) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        Image.open(PHOTO).convert("RGB").resize(size, Image.BICUBIC).save(big, quality=92)
        print(f"{size[0]}×{size[1]} photo from {PHOTO.name}; default model")
        for name, extra in (
            ("plain (resize to fit)", []),
            (f"--tile {tile}", ["--tile", str(tile)]),
        ):
            command = [sys.executable, "-m", "deeplabcli", "predict", str(big), "-o",
                       str(Path(tmp) / "mask.png"), "--overwrite", "-q", *extra]  # fmt: skip
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", RSS_WRAPPER, *command], capture_output=True, text=True
            )
            seconds = time.perf_counter() - start
            kib, code = out.stdout.split()
            print(
                f"  {name:24s} peak RSS {int(kib) / 2**20:.2f} GiB  ({seconds:.0f} s, exit {code})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-miou", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--overlaps", default="0,0.25,0.5", help="comma-separated fractions")
    args = parser.parse_args()
    if not args.skip_miou:
        miou_table([float(v) for v in args.overlaps.split(",")])
    if not args.skip_rss:
        peak_rss(513, (6000, 4000))


if __name__ == "__main__":
    main()
