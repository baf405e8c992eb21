"""Training speed and peak memory: our training step vs a plain PyTorch loop.

Each variant runs in its own process (so its peak memory is its own) on a fixed random batch:
SGD momentum 0.9, weight decay 1e-4, cross-entropy with ignore 255, train mode, the same thread
count. Rounds alternate the variants (ours, theirs, ours, theirs, ...) so drifting machine load
hits both alike; medians are reported.

- ``resnet101``: our ``deeplabv3_resnet101`` (the paper's OS 16, Multi_Grid (1, 2, 4), ASPP
  (6, 12, 18) + image pooling) through :func:`deeplabcli.engine.step.train_step` with the poly
  LR set every step, vs torchvision's ``deeplabv3_resnet101`` re-strided to OS 16 (layer4
  dilated, ASPP 6/12/18; its head has one more 3×3 conv) in a plain loop. ``ours-tvhead`` is our
  model with torchvision's head variant: the identical architecture.
- ``mobilenetv2``: our ``deeplabv3_mobilenetv2`` (Google's DeepLab head, OS 8 as published and
  OS 16) through our step vs the same network in a plain loop (torchvision has no MobileNetV2
  DeepLab), i.e. the cost of our engine itself.

Peak memory is the process's peak resident set (CPU) or ``torch.cuda.max_memory_allocated``.

    python benchmarks/train_speed.py                 # crop 513, batch 2 (long on a laptop CPU)
    python benchmarks/train_speed.py --quick         # crop 129, 1 round: a smoke run
    python benchmarks/train_speed.py --device cuda --batch-size 16 --amp   # the paper's batch
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "resnet101": ["ours", "ours-tvhead", "torchvision"],
    "mobilenetv2": ["ours", "ours-os16", "plain-loop"],
}


def build(model_name: str, variant: str) -> torch.nn.Module:
    from deeplabcli import build_model

    if model_name == "mobilenetv2":
        return build_model(
            "deeplabv3_mobilenetv2", output_stride=16 if variant == "ours-os16" else 8
        )
    if variant == "ours":
        return build_model("deeplabv3_resnet101")
    if variant == "ours-tvhead":
        return build_model("deeplabv3_resnet101", head="torchvision", multi_grid=(1, 1, 1))
    from torchvision.models import resnet101
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    body = resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    body = IntermediateLayerGetter(body, return_layers={"layer4": "out"})
    return DeepLabV3(body, DeepLabHead(2048, 21, atrous_rates=(6, 12, 18)))


def worker(args: argparse.Namespace) -> None:
    """One variant in this process: print {"seconds": [...], "peak_mib": ...} as JSON."""
    from deeplabcli.engine.schedule import param_groups, poly_lr, set_bn_momentum, set_lr
    from deeplabcli.engine.step import amp_settings, train_step

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args.model, args.variant).to(device).train()
    ours = args.variant.startswith("ours")
    n, size = args.batch_size, args.crop
    images = torch.randn(n, 3, size, size, device=device)
    target = torch.randint(0, 21, (n, size, size), device=device)
    target[:, : size // 8] = 255
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    amp_dtype, scaler = amp_settings(device, args.amp if device.type == "cuda" else None)
    if ours:
        set_bn_momentum(model, 0.0003)
        optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=0.007, momentum=0.9)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)

    def plain_step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)["out"]
        loss = F.cross_entropy(logits.float(), target, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    estimate = None
    if ours:  # what `deeplab train` checks before starting (see engine/memory.py)
        from deeplabcli.engine.memory import estimate_training_bytes

        estimate = estimate_training_bytes(model, size, n) / 2**20
    seconds = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        if ours:
            set_lr(optimizer, poly_lr(0.007, step, 30000))
            train_step(model, images, target, optimizer, amp_dtype=amp_dtype, scaler=scaler)
        else:
            plain_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "estimate_mib": estimate}))


def run_variant(args: argparse.Namespace, model: str, variant: str) -> dict:
    command = [
        sys.executable, __file__, "--worker", "--model", model, "--variant", variant,
        "--crop", str(args.crop), "--batch-size", str(args.batch_size),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
    ] + (["--amp"] if args.amp else [])  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="crop 129, 1 round, 1 step")
    parser.add_argument("--models", default="resnet101,mobilenetv2")
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.crop, args.rounds, args.steps = 129, 1, 1
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"device {where}, {torch.get_num_threads()} threads, crop {args.crop}, batch "
        f"{args.batch_size}, amp {args.amp}, {args.rounds} rounds × {args.steps} steps"
    )
    for model in args.models.split(","):
        times: dict[str, list[float]] = {v: [] for v in VARIANTS[model]}
        peaks: dict[str, list[float]] = {v: [] for v in VARIANTS[model]}
        estimates: dict[str, float | None] = {}
        for _ in range(args.rounds):
            for variant in VARIANTS[model]:
                result = run_variant(args, model, variant)
                times[variant] += result["seconds"]
                peaks[variant].append(result["peak_mib"])
                estimates[variant] = result["estimate_mib"]
        reference = statistics.median(times[VARIANTS[model][-1]])
        print(
            f"\n{model}: variant, it/s (median), s/it, speed vs {VARIANTS[model][-1]}, "
            "peak MiB (our pre-flight estimate)"
        )
        for variant in VARIANTS[model]:
            median = statistics.median(times[variant])
            print(
                f"  {variant:12s} {1 / median:8.3f} it/s {median:8.2f} s/it "
                f"{reference / median:6.2f}x {max(peaks[variant]):9.0f} MiB"
                + (f" ({estimates[variant]:.0f})" if estimates.get(variant) else "")
            )


if __name__ == "__main__":
    main()
