"""Model speed: our DeepLabv3-ResNet-101 (torchvision head variant) vs torchvision's own model.

Same weights (ours is converted from the torchvision model), 1×3×513×513, eval mode, inference
only, in one process with the same thread count. Runs are interleaved (ours, theirs, ours, ...)
after warm-up so drifting machine load hits both sides alike; medians and ratios are printed.

OS 8 compares with torchvision's published configuration; OS 16 compares with torchvision's
ResNet re-strided (layer4 dilated only, ASPP 6/12/18) against our model switched with
``set_output_stride(16)``. ``ours+fused`` is the same model after ``deeplabcli.models.fuse``
(BN folded into convs, channels_last, each conv with its ReLU and residual sum in one oneDNN
call), i.e. what ``deeplab predict`` runs.

Also prints parameters and GFLOPs (torch.utils.flop_counter) of ResNet-50/101 at OS 8 and 16.

    python benchmarks/model_speed.py            # full run (several minutes on 2 CPU cores)
    python benchmarks/model_speed.py --quick    # smoke run: small input, 2 repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import deeplabv3_resnet101
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from deeplabcli import build_model
from deeplabcli.weights.convert import from_torchvision


def torchvision_model(output_stride: int) -> torch.nn.Module:
    """torchvision's DeepLabv3-ResNet-101, at OS 8 (published) or re-strided to OS 16."""
    if output_stride == 8:
        return deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21)
    body = resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    body = IntermediateLayerGetter(body, return_layers={"layer4": "out"})
    return DeepLabV3(body, DeepLabHead(2048, 21, atrous_rates=(6, 12, 18)))


def time_interleaved(
    runners: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def gflops(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smoke run: 129 px, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats, args.warmup = 129, 2, 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, input 1×3×{args.size}×{args.size}")

    x = torch.randn(1, 3, args.size, args.size)
    for output_stride in (8, 16):
        torch.manual_seed(0)
        peer = torchvision_model(output_stride).eval()
        ours = from_torchvision(peer.state_dict(), "deeplabv3_resnet101").eval()
        ours.set_output_stride(output_stride)
        runners: dict[str, Callable[[], object]] = {}
        with torch.inference_mode():
            diff = (peer(x)["out"] - ours(x)["out"]).abs().max().item()
        runners["torchvision"] = lambda peer=peer: _infer(peer, x)
        runners["ours"] = lambda ours=ours: _infer(ours, x)
        try:
            from deeplabcli.models.fuse import optimize_for_inference
        except ImportError:  # the fused path is optional for this benchmark
            optimize_for_inference = None
        if optimize_for_inference is not None:
            fused = optimize_for_inference(ours, cpu_fusion=True)  # what predict/eval run
            runners["ours+fused"] = lambda fused=fused: _infer(fused, x)
        times = time_interleaved(runners, args.repeats, args.warmup)
        base = statistics.median(times["torchvision"])
        print(f"\nOS {output_stride} (max |Δ logits| ours vs torchvision: {diff:.2e})")
        print(f"  {'model':<12} {'median s':>9} {'min s':>8} {'speed vs torchvision':>22}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:<12} {median:9.3f} {min(values):8.3f} {base / median:21.2f}×")

    print("\nParameters and GFLOPs (21 classes, paper head, 513×513):")
    print(f"  {'model':<22} {'OS':>3} {'params':>12} {'GFLOPs':>9}")
    for arch in ("deeplabv3_resnet50", "deeplabv3_resnet101"):
        for output_stride in (8, 16):
            model = build_model(arch, output_stride=output_stride).eval()
            params = sum(p.numel() for p in model.parameters())
            flops = gflops(model, args.size)
            print(f"  {arch:<22} {output_stride:>3} {params:>12,} {flops:>9.1f}")


def _infer(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


if __name__ == "__main__":
    main()
