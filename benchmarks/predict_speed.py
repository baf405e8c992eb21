"""End-to-end ``deeplab predict`` speed against peers running the same model, in one process.

Every runner goes through the same pipeline (decode on background threads → preprocessing →
network → probabilities resized to the image → class map → PNG written on background threads);
only the network differs, so the ratios measure what the network costs end to end:

(a) our MobileNetV2 converted from Google's ``deeplabv3_257_mv_gpu.tflite`` (batch norm folded,
    channels-last) vs the TFLite interpreter (XNNPACK) running that very file: the 9 photos and
    the 120 VOC val images, same thread count (goal ≥ 1.0×); ours with one stream and with
    predict's default of two 1-thread streams, TFLite with one 2-thread interpreter (as users
    run it) and with one 1-thread interpreter per stream (the same trick);
(b) our ``deeplabv3_resnet101`` converted from a randomly initialised torchvision model (same
    weights, torchvision head, OS 8) vs torchvision's own model, images fitted to 513 × 513
    (goal ≥ 1.3×), and our model at OS 16;
(c) peak resident memory of each runner, and model-only ablations: what batch-norm folding,
    channels-last, conv/activation fusion, prepacked weights, inference_mode and batching buy.

Runners are interleaved in chunks so machine-load drift hits all alike; times are wall clock.

    python benchmarks/predict_speed.py             # full run (~20 min on 2 CPU cores)
    python benchmarks/predict_speed.py --quick     # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `deeplab predict` does (see its CLI)

import torch  # after the wait policy: OpenMP reads it when it starts
from torch import nn

from deeplabcli.config import PredictConfig, Preprocessing
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.models.fuse import fold_batchnorm, optimize_for_inference
from deeplabcli.prediction.pipeline import predict_files
from deeplabcli.weights.convert import from_torchvision
from deeplabcli.weights.convert.tflite import from_tflite

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FLOAT_TFLITE = DATA / "models" / "deeplabv3_257_mv_gpu.tflite"


class TFLiteNetwork(nn.Module):
    """The TFLite interpreter behind our model interface: normalised (N, 3, S, S) float →
    ``{"out": logits (N, C, S, S)}``; ``config`` is that of our converted model, so the
    Segmenter gives both the same preprocessing and postprocessing."""

    def __init__(self, path: Path, config, threads: int) -> None:
        super().__init__()
        from ai_edge_litert.interpreter import Interpreter

        self.config = config
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.eval()

    @property
    def output_stride(self) -> int:
        return self.config.output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = []
        for image in x.permute(0, 2, 3, 1).contiguous().numpy():
            self.interpreter.set_tensor(self.input, image[None])
            self.interpreter.invoke()
            outs.append(torch.from_numpy(self.interpreter.get_tensor(self.output).copy()))
        return {"out": torch.cat(outs).permute(0, 3, 1, 2)}


class TFLiteStreams(TFLiteNetwork):
    """One 1-thread interpreter per calling thread: TFLite's form of our parallel streams (an
    interpreter must not be shared between threads)."""

    def __init__(self, path: Path, config) -> None:
        nn.Module.__init__(self)
        self.path = path
        self.config = config
        self.local = threading.local()
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not hasattr(self.local, "network"):
            self.local.network = TFLiteNetwork(self.path, self.config, 1)
        return self.local.network(x)


class TorchvisionNetwork(nn.Module):
    """torchvision's model with our model's ``config`` (preprocessing) attached."""

    def __init__(self, model: nn.Module, config) -> None:
        super().__init__()
        self.model = model.eval()
        self.config = config
        self.eval()

    @property
    def output_stride(self) -> int:
        return self.config.output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.model(x)["out"]}


# ---------------------------------------------------------------------- measuring
def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # Linux: reset VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")


def run_pipeline(
    segmenter: Segmenter, images: list[Path], out: Path, batch: int, streams: int | None = None
) -> list[float]:
    """Predict ``images`` end to end into ``out``; per-image seconds from the records.
    ``streams`` None is predict's default."""
    config = PredictConfig(
        output=str(out), format="index", overwrite=True, batch_size=batch, streams=streams
    )
    summary = predict_files(segmenter, [str(p) for p in images], config, progress=False)
    assert summary.failed == 0, [r.message for r in summary.failures]
    return [r.seconds for r in summary.results]


def interleaved(
    runners: dict[str, Callable[[list[Path]], list[float]]],
    images: list[Path],
    chunk: int,
    passes: int,
) -> dict[str, tuple[float, list[float]]]:
    """(total wall seconds, per-image seconds) per runner over ``passes`` passes of ``images``,
    processed ``chunk`` images at a time with the runners' order alternating."""
    for run in runners.values():  # warm-up: first-call costs (oneDNN primitives, allocator)
        run(images[:2])
    totals = {name: 0.0 for name in runners}
    per_image: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for _ in range(passes):
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            for name in order:
                begin = time.perf_counter()
                per_image[name] += runners[name](part)
                totals[name] += time.perf_counter() - begin
            order.reverse()
    return {name: (totals[name], per_image[name]) for name in runners}


def report(
    title: str, results: dict[str, tuple[float, list[float]]], count: int, base: str
) -> None:
    print(f"\n{title}")
    print(f"  {'runner':<26} {'images/s':>9} {'median s/img':>13} {'speed vs ' + base:>20}")
    base_rate = count / results[base][0]
    for name, (total, per_image) in results.items():
        rate = count / total
        print(
            f"  {name:<26} {rate:9.2f} {statistics.median(per_image):13.3f} "
            f"{rate / base_rate:19.2f}×"
        )


def model_time(
    model: nn.Module, x: torch.Tensor, repeats: int, grad_mode: str = "inference"
) -> float:
    """Median seconds of one forward pass."""
    context = torch.inference_mode if grad_mode == "inference" else torch.no_grad
    times = []
    with context():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------- benchmark parts
def mobilenet_part(args, photos: list[Path], voc: list[Path], tmp: Path) -> None:
    ours_model = from_tflite(FLOAT_TFLITE)
    peer = TFLiteNetwork(FLOAT_TFLITE, ours_model.config, args.threads)
    ours = Segmenter(ours_model, device="cpu")
    tflite = Segmenter(peer, device="cpu", optimize=False)
    tflite_streams = Segmenter(TFLiteStreams(FLOAT_TFLITE, ours_model.config), optimize=False)
    runners = {  # predict's default for this small model: 2 streams of 1 thread
        "ours, 1 stream": lambda imgs: run_pipeline(ours, imgs, tmp / "a", 1, streams=1),
        "ours (default: 2 streams)": lambda imgs: run_pipeline(ours, imgs, tmp / "d", 1),
        f"ours, batch {args.batch}": lambda imgs: run_pipeline(ours, imgs, tmp / "b", args.batch),
        "TFLite XNNPACK": lambda imgs: run_pipeline(tflite, imgs, tmp / "c", 1, streams=1),
        "TFLite, 2 interpreters": lambda imgs: run_pipeline(
            tflite_streams, imgs, tmp / "e", 1, streams=2
        ),
    }
    for name, images in (("9 photos", photos), ("VOC val", voc)):
        results = interleaved(runners, images, chunk=len(images), passes=args.passes)
        title = (
            f"(a) MobileNetV2 257 px (float), {name}: {len(images)} images × {args.passes} passes"
        )
        report(title, results, len(images) * args.passes, "TFLite XNNPACK")
    x = torch.randn(1, 3, 257, 257)
    print("\n    network only, 1×3×257×257 (median ms):")
    print(f"      TFLite XNNPACK              {1e3 * model_time(peer, x, args.repeats):8.1f}")
    for name, model, cl in (
        ("ours plain", ours_model.eval(), False),
        ("ours BN folded", fold_batchnorm(ours_model), False),
        ("ours channels-last", optimize_for_inference(ours_model, fold_bn=False), True),
        ("ours folded+channels-last", optimize_for_inference(ours_model), True),
        (
            "ours + conv/ReLU6/sum fused",
            optimize_for_inference(ours_model, cpu_fusion=True, prepack=False),
            True,
        ),
        ("ours + weights prepacked", ours.network, True),  # what predict runs
    ):
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x
        print(f"      {name:<27} {1e3 * model_time(model, xi, args.repeats):8.1f}")


def resnet_part(args, photos: list[Path], voc: list[Path], tmp: Path) -> None:
    from torchvision.models.segmentation import deeplabv3_resnet101

    torch.manual_seed(0)
    torchvision_model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21)
    torchvision_model.eval()
    ours_model = from_torchvision(torchvision_model.state_dict(), "deeplabv3_resnet101")
    prep = Preprocessing(resize="fit", size=args.size)
    ours_model.config = ours_model.config.replace(preprocessing=prep)
    peer = TorchvisionNetwork(torchvision_model, ours_model.config)
    segmenters = {
        "ours OS 8 (fused, channels-last)": Segmenter(ours_model, device="cpu"),
        "torchvision OS 8": Segmenter(peer, device="cpu", optimize=False),
        "ours OS 16 (fused, channels-last)": Segmenter(ours_model, device="cpu", output_stride=16),
    }
    runners = {
        name: (lambda imgs, s=s, i=i: run_pipeline(s, imgs, tmp / f"r{i}", 1))
        for i, (name, s) in enumerate(segmenters.items())
    }
    images = photos + voc
    results = interleaved(runners, images, chunk=args.chunk, passes=1)
    title = f"(b) ResNet-101 at {args.size} px, {len(photos)} photos + {len(voc)} VOC val images"
    report(title, results, len(images), "torchvision OS 8")
    x = torch.randn(1, 3, args.size, args.size)
    xl = x.contiguous(memory_format=torch.channels_last)
    print(f"\n    network only, 1×3×{args.size}×{args.size} (median s), OS 8:")
    rows = [
        ("torchvision, no_grad", torchvision_model, x, "no_grad"),
        ("torchvision, inference_mode", torchvision_model, x, "inference"),
        ("ours plain", ours_model.eval(), x, "inference"),
        ("ours BN folded", fold_batchnorm(ours_model), x, "inference"),
        ("ours channels-last", optimize_for_inference(ours_model, fold_bn=False), xl, "inference"),
        ("ours folded+channels-last", optimize_for_inference(ours_model), xl, "inference"),
        (
            "ours + conv/ReLU/sum fused",
            segmenters["ours OS 8 (fused, channels-last)"].network,  # what predict runs
            xl,
            "inference",
        ),
        (  # not the default for a model this large: +170 MiB (see models.cpu_fusion)
            "ours + weights prepacked",
            optimize_for_inference(ours_model, cpu_fusion=True, prepack=True),
            xl,
            "inference",
        ),
    ]
    for name, model, xi, mode in rows:
        print(f"      {name:<29} {model_time(model, xi, args.model_repeats, mode):8.3f}")


def _memory_child(kind: str, threads: int, size: int, images: list[Path], out: Path, queue) -> None:
    """In a fresh process: load one runner's model, then measure the peak RSS of building its
    Segmenter and predicting ``images`` (what `deeplab predict` holds once the model is loaded)."""
    from torchvision.models.segmentation import deeplabv3_resnet101

    torch.set_num_threads(threads)
    if kind == "none":  # the interpreter with torch, torchvision and deeplabcli imported
        queue.put((rss_mib(), peak_rss_mib()))
        return
    if kind.startswith("resnet"):
        torch.manual_seed(0)
        tv = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21).eval()
        ours = from_torchvision(tv.state_dict(), "deeplabv3_resnet101")
        ours.config = ours.config.replace(preprocessing=Preprocessing(resize="fit", size=size))
        network: nn.Module = ours if kind == "resnet-ours" else TorchvisionNetwork(tv, ours.config)
        del tv, ours
    else:
        ours = from_tflite(FLOAT_TFLITE)
        network = (
            ours if kind == "mobilenet-ours" else TFLiteNetwork(FLOAT_TFLITE, ours.config, threads)
        )
        del ours
    gc.collect()
    loaded = rss_mib()
    reset_peak_rss()
    if kind.endswith("ours"):  # as the CLI does: optimise the loaded model in place
        segmenter = Segmenter(network, device="cpu", inplace=True)
    else:
        segmenter = Segmenter(network, device="cpu", optimize=False)
    run_pipeline(segmenter, images, out, 1)
    queue.put((loaded, peak_rss_mib()))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_part(args, images: list[Path], tmp: Path) -> None:
    """Peak resident memory of each runner, each in a fresh child process."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    print(f"\n(c) resident memory (MiB), each runner in a fresh process, {len(images)} images:")
    print(f"  {'runner':<30} {'model loaded':>13} {'peak predicting':>16}")
    for name, kind in (
        ("(imports only, no model)", "none"),
        ("ours MobileNetV2 257", "mobilenet-ours"),
        ("TFLite MobileNetV2 257", "mobilenet-tflite"),
        ("ours ResNet-101 OS 8", "resnet-ours"),
        ("torchvision ResNet-101 OS 8", "resnet-torchvision"),
    ):
        queue = context.Queue()
        child = context.Process(
            target=_memory_child, args=(kind, args.threads, args.size, images, tmp / kind, queue)
        )
        child.start()
        loaded, peak = queue.get()
        child.join()
        print(f"  {name:<30} {loaded:13.0f} {peak:16.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--passes", type=int, default=3, help="passes over each set for (a)")
    parser.add_argument("--batch", type=int, default=4, help="batch size of the batched runner")
    parser.add_argument("--size", type=int, default=513, help="ResNet input side")
    parser.add_argument("--chunk", type=int, default=8, help="images per interleaved chunk (b)")
    parser.add_argument("--voc", type=int, default=120, help="VOC val images to use")
    parser.add_argument("--resnet-voc", type=int, default=120, help="of those, for (b)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model-repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: few images, small input")
    parser.add_argument("--skip", nargs="*", default=[], choices=["mobilenet", "resnet", "memory"])
    args = parser.parse_args()
    if args.quick:
        args.passes, args.voc, args.size, args.repeats, args.model_repeats = 1, 4, 129, 3, 1
    torch.set_num_threads(args.threads)
    voc_root = DATA / "VOCdevkit" / "VOC2012"
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[: args.voc]
    voc = [voc_root / "JPEGImages" / f"{i}.jpg" for i in ids]
    photos = sorted((DATA / "photos").iterdir())[: 3 if args.quick else None]
    print(
        f"torch {torch.__version__}, {args.threads} threads (TFLite too), "
        f"{len(photos)} photos, {len(voc)} VOC val images"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if "mobilenet" not in args.skip:
            mobilenet_part(args, photos, voc, Path(tmp))
        if "resnet" not in args.skip:
            resnet_part(args, photos, voc[: 2 if args.quick else args.resnet_voc], Path(tmp))
        if "memory" not in args.skip:
            memory_part(args, photos[:3] + voc[:3], Path(tmp))


if __name__ == "__main__":
    main()
