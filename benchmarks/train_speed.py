"""Training speed and peak memory: our training step vs a plain PyTorch loop.

Every variant trains on the same fixed random batch: SGD momentum 0.9, weight decay 1e-4,
cross-entropy with ignore 255, train mode, the same thread count. Speed: all variants live in
one process and their steps are interleaved (A, B, C, A, B, C, ...), so changing machine load
hits them alike; the median and best step are reported. Memory: each variant runs alone in a
fresh process.

- ``resnet101``: our ``deeplabv3_resnet101`` (the paper's OS 16, Multi_Grid (1, 2, 4), ASPP
  (6, 12, 18) + image pooling) through :func:`deeplabcli.training.step.train_step` with the poly
  LR set every step, vs torchvision's ``deeplabv3_resnet101`` re-strided to OS 16 (layer4
  dilated, ASPP 6/12/18; its head has one more 3×3 conv) in a plain loop. ``ours-tvhead`` is our
  model with torchvision's head variant: the identical architecture.
- ``mobilenetv2``: our ``deeplabv3_mobilenetv2`` (Google's DeepLab head, OS 8 as published and
  OS 16) through our step vs the same network in a plain loop (torchvision has no MobileNetV2
  DeepLab), i.e. the cost of our engine itself.

Peak memory is the process's peak resident set (VmHWM; CPU) or
``torch.cuda.max_memory_allocated``; in brackets, the estimate `deeplab train` checks first.

    python benchmarks/train_speed.py                 # crop 513, batch 2 (long on a laptop CPU)
    python benchmarks/train_speed.py --quick         # crop 129, 2 steps, no memory: a smoke run
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


class Runner:
    """One variant ready to train: model, optimizer and a fixed batch on ``device``."""

    def __init__(self, model_name: str, variant: str, args: argparse.Namespace) -> None:
        from deeplabcli.training.schedule import param_groups, set_bn_momentum
        from deeplabcli.training.step import amp_settings

        torch.manual_seed(0)
        self.device = device = torch.device(args.device)
        self.model = build(model_name, variant).to(device).train()
        self.ours = variant.startswith("ours")
        n, size = args.batch_size, args.crop
        self.images = torch.randn(n, 3, size, size, device=device)
        self.target = torch.randint(0, 21, (n, size, size), device=device)
        self.target[:, : size // 8] = 255
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.amp_dtype, self.scaler = amp_settings(
            device, args.amp if device.type == "cuda" else None
        )
        if self.ours:  # what `deeplab train` does
            set_bn_momentum(self.model, 0.0003)
            groups = param_groups(self.model, 1e-4)
            self.optimizer = torch.optim.SGD(groups, lr=0.007, momentum=0.9)
        else:  # the plain loop
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4
            )
        self.steps = 0

    def step(self) -> float:
        """One training step; returns its wall time in seconds."""
        from deeplabcli.training.schedule import poly_lr, set_lr
        from deeplabcli.training.step import train_step

        start = time.perf_counter()
        if self.ours:
            set_lr(self.optimizer, poly_lr(0.007, self.steps, 30000))
            train_step(
                self.model, self.images, self.target, self.optimizer,
                amp_dtype=self.amp_dtype, scaler=self.scaler,
            )  # fmt: skip
        else:
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                logits = self.model(self.images)["out"]
            loss = F.cross_entropy(logits.float(), self.target, ignore_index=255)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.steps += 1
        return time.perf_counter() - start


def memory_worker(args: argparse.Namespace) -> None:
    """Peak memory of one variant alone in this process (warm-up + one step), as JSON; for our
    model also the pre-flight estimate `deeplab train` checks (engine/memory.py)."""
    from deeplabcli.training.memory import estimate_training_bytes

    runner = Runner(args.model, args.variant, args)
    estimate = None
    if runner.ours:
        estimate = estimate_training_bytes(runner.model, args.crop, args.batch_size) / 2**20
    runner.step()
    runner.step()
    if runner.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib()
    print(json.dumps({"peak_mib": peak, "estimate_mib": estimate}))


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space;
    getrusage's ru_maxrss would also count the parent's peak, which survives fork + exec."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB, non-Linux


def peak_memory(args: argparse.Namespace, model: str, variant: str) -> dict:
    command = [
        sys.executable, __file__, "--memory-worker", "--model", model, "--variant", variant,
        "--crop", str(args.crop), "--batch-size", str(args.batch_size), "--device", args.device,
    ] + (["--amp"] if args.amp else [])  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def speeds(args: argparse.Namespace, model: str) -> dict[str, list[float]]:
    """Step times of every variant, steps interleaved (A, B, C, A, B, C, ...) in this process
    so that changing machine load hits all variants alike."""
    runners = {variant: Runner(model, variant, args) for variant in VARIANTS[model]}
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step()
    times: dict[str, list[float]] = {variant: [] for variant in runners}
    for _ in range(args.steps):
        for variant, runner in runners.items():
            times[variant].append(runner.step())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="crop 129, 2 steps, no memory runs")
    parser.add_argument("--models", default="resnet101,mobilenetv2")
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--no-speed", action="store_true", help="measure memory only")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args)
        return
    if args.quick:
        args.crop, args.steps = 129, 2
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"device {where}, {torch.get_num_threads()} threads, crop {args.crop}, batch "
        f"{args.batch_size}, amp {args.amp}, {args.steps} interleaved steps per variant"
    )
    for model in args.models.split(","):
        times = (
            {v: [float("nan")] for v in VARIANTS[model]} if args.no_speed else speeds(args, model)
        )
        reference = VARIANTS[model][-1]
        print(f"\n{model}: it/s median (best), speed vs {reference} (median), peak MiB (estimate)")
        for variant in VARIANTS[model]:
            median, best = statistics.median(times[variant]), min(times[variant])
            ratio = statistics.median(times[reference]) / median
            memory = "" if args.quick else _memory_text(peak_memory(args, model, variant))
            print(
                f"  {variant:12s} {1 / median:7.3f} ({1 / best:6.3f}) it/s {ratio:6.2f}x {memory}"
            )


def _memory_text(result: dict) -> str:
    text = f"{result['peak_mib']:8.0f} MiB"
    if result["estimate_mib"] is not None:
        text += f" ({result['estimate_mib']:.0f})"
    return text


if __name__ == "__main__":
    main()
