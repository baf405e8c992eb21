"""Evaluation speed: images/s of ``deeplab eval``'s engine and the share of time spent waiting
for data.

Google's float DeepLabv3 MobileNetV2 TFLite model (converted on load) on the 120 VOC val images
in ``../shared/data``, whole images, OS 8, in one process:

- ``single``: one scale (the paper's plain protocol);
- ``6 scales + flip``: 0.5, 0.75, 1, 1.25, 1.5, 1.75 and left-right flips (12 runs per image);

each at batch size 1 with eval's default for this small model (two compute streams side by
side, each on half the threads) and with one stream, and at ``--batch-size`` (default 8, one
stream).

For each it prints images/s (setup included, as ``deeplab eval`` reports it) and the share of
the scoring loop spent waiting for decoded images (data loading is the bottleneck when that
share is large): in all, and after the first batch (whose wait includes starting the loader
processes). It also times reading and validating one image alone, in the main process, for
comparison with the time per image.

    python benchmarks/eval_speed.py                 # both settings, 2 loader workers
    python benchmarks/eval_speed.py --quick         # 24 images
    python benchmarks/eval_speed.py --workers 0     # loading in the main process
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from deeplabcli import load_model
from deeplabcli.data import open_dataset
from deeplabcli.evaluation.protocol import evaluate_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIX_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(SHARED / "VOCdevkit"))
    parser.add_argument("--model", default=str(SHARED / "models" / "deeplabv3_257_mv_gpu.tflite"))
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="only the first 24 images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = 24 if args.quick else None
    dataset = open_dataset("voc", args.data_root, "val")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    model = load_model(args.model)
    print(f"{count} VOC val images, {Path(args.model).name}, OS {model.output_stride}, "
          f"{args.workers} loader workers, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip

    start = time.perf_counter()
    for index in range(count):
        dataset.load(index)
    read = (time.perf_counter() - start) / count
    print(f"reading + validating one image and mask: {1000 * read:.1f} ms")

    print(f"{'setting':<32} {'images/s':>9} {'s/image':>8} {'waiting for data':>17} "
          f"{'after 1st batch':>16} {'mIoU':>7}")  # fmt: skip
    runs = [(1, None, "batch 1, 2 streams"), (1, 1, "batch 1, 1 stream")]
    runs.append((args.batch_size, None, f"batch {args.batch_size}"))
    settings = [
        (f"{name}, {label}", scales, flip, batch_size, streams)
        for name, scales, flip in (("single", (1.0,), False), ("6 scales+flip", SIX_SCALES, True))
        for batch_size, streams, label in runs
    ]
    for name, scales, flip, batch_size, streams in settings:
        result = evaluate_dataset(
            model,
            dataset,
            scales=scales,
            flip=flip,
            batch_size=batch_size,
            workers=args.workers,
            device="cpu",
            limit=limit,
            streams=streams,
        )
        steady = (result.load_wait - result.first_wait) / result.loop_seconds
        print(f"{name:<32} {result.images_per_second:>9.2f} {1 / result.images_per_second:>8.3f} "
              f"{100 * result.load_share:>16.1f}% {100 * steady:>15.1f}% "
              f"{result.metrics.miou:>7.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
