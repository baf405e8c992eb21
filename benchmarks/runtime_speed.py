"""Runtime speed: our backends (torch, ONNX Runtime, OpenVINO; float, bf16, int8) against the
TFLite interpreter and torchvision, network only and end to end (issue 11's benchmark).

Same weights, same input, same thread count (``--threads``, default: the cores available);
each variant runs in its own worker process (so each reports its own peak memory), driven
round-robin by this one: each round runs every variant once, the order reversing every round,
after warm-up rounds; medians, and ratios of medians against the peer. Every table comes with
the CPU, its vector/matrix extensions, the library versions and the machine load (1-minute
load average before and after, and the CPU time the hypervisor stole): the machine is shared,
so a table marked BUSY is not to be trusted to a few per cent.

``--section network``: Google's ``deeplabv3_257_mv_gpu`` at 1×3×257×257 and
``deeplabv3_mnv2_pascal_quant`` at 1×3×513×513, our model loaded from the ``.tflite`` file:
torch (our predict path: BN folded, channels-last, conv+activation fused, inference mode),
torch bf16 autocast, ONNX Runtime float and int8, OpenVINO f32, bf16 and int8, against the
TFLite interpreter (XNNPACK) running the original file (the quantised one with its uint8 input
and 8-bit arithmetic). bf16 rows need AVX512-BF16 or AMX-BF16. int8: what ``deeplab export
--int8`` makes (``deeplabcli.exporting.quantize_onnx``: ONNX Runtime's static QDQ quantisation;
``quantize_openvino``: NNCF), calibrated on 20 VOC train images preprocessed as predict does.
The last columns compare each row's output with the torch row's (argmax pixels, logits).

``--section resnet``: DeepLabv3-ResNet-101 with torchvision's head and seed-0 random weights,
at OS 8 (torchvision's own configuration) and OS 16 (torchvision's backbone with layer 4 dilated
only and ASPP rates 6/12/18, against ours switched with ``set_output_stride(16)``): our
backends against torchvision eager (``eval()``, ``inference_mode``). Goal: ≥ 2×.

``--section e2e``: whole processes, alternating, wall time, CPU time and peak memory per
process (``wait4``): ``deeplab predict IMAGES -o DIR --overwrite`` (default settings: the
default model, palette PNGs; and each ``--backend`` once it exists) on the 120 VOC val images
the tests use, against ``_tflite_predict.py`` (a Python loop over the TFLite interpreter with
the same pre- and post-processing and the same PNG writer) running the default model's source,
``deeplabv3_mnv2_pascal_quant.tflite`` (goal ≥ 1.0×); the same with ``--model
deeplabv3_257_mv_gpu.tflite`` against the loop running that file; then one photo, ``deeplab
predict photo.jpg -o mask.png``, default model (goal ≤ 0.6 s, ≤ 300 MiB). Each table starts
with an empty export cache of its own: the first run of a non-torch backend exports the model
(shown as "first run", not in the medians). Peak memory: the process's own ``ru_maxrss`` from
``wait4`` in a small launcher process (Linux starts a child's count at its parent's peak, which
here would be this benchmark's).

Rounds (warm-up + timed): network 3 + 20, resnet 1 + 5, e2e 1 + 5 runs per command;
``--quick``: 1 + 3, 1 + 2 with ResNet at 257², 1 + 3 runs on 8 images. ``--rounds`` and
``--warmup`` override them for every section (``--warmup 0`` puts the e2e cold runs in the
medians).

    python benchmarks/runtime_speed.py                      # everything (~30 min on 2 cores)
    python benchmarks/runtime_speed.py --quick              # smoke run: few rounds, 8 images
    python benchmarks/runtime_speed.py --section network --rounds 30 --threads 2
    python benchmarks/runtime_speed.py --section resnet --resnet-int8
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `deeplab predict` sets it

import numpy as np
from _runtime_exports import prepare_exports
from _runtime_workers import Measured, Variant, measure_round_robin, torchvision_resnet
from PIL import Image

from deeplabcli.runtimes.extras import (
    auto_backend,
    backend_installed,
    bf16_backend,
    cpu_features,
    native_bf16,
)
from deeplabcli.runtimes.preprocess import normalise, preprocess, resize_rgb

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
MODELS = DATA / "models"
VOC = DATA / "VOCdevkit" / "VOC2012"
NETWORKS = (("deeplabv3_257_mv_gpu.tflite", 257), ("deeplabv3_mnv2_pascal_quant.tflite", 513))
LIBRARIES = (
    "torch", "torchvision", "onnxruntime", "onnx", "openvino", "nncf", "ai-edge-litert",
    "numpy", "pillow",
)  # fmt: skip
CALIBRATION_IMAGES = 20
PHOTO = DATA / "photos" / "dog.jpg"
E2E_WALL_GOAL_S, E2E_PEAK_GOAL_MIB = 0.6, 300
BACKENDS = ("torch", "onnxruntime", "openvino")  # deeplab predict --backend ...
AUTO_ROWS = {"openvino": "openvino f32"}  # the network table's row of a backend, where not its name
E2E_MODELS = (  # (what the e2e tables call it, predict's --model (None: default), the peer's file)
    ("default model (embedded, from deeplabv3_mnv2_pascal_quant.tflite)", None,
     "deeplabv3_mnv2_pascal_quant.tflite"),
    ("--model deeplabv3_257_mv_gpu.tflite", "deeplabv3_257_mv_gpu.tflite",
     "deeplabv3_257_mv_gpu.tflite"),
)  # fmt: skip
E2E_PEER = "TFLite loop (XNNPACK)"


# ---------------------------------------------------------------------- the machine
def has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()["features"]))  # type: ignore[arg-type]


def bf16_skip() -> str | None:
    """Why the bf16 rows are skipped, or None when the CPU has bf16 instructions."""
    return None if has_bf16() else "the CPU has no AVX512-BF16 or AMX-BF16"


def litert_skip() -> str | None:
    """Why the TFLite peer is skipped, or None when its interpreter is installed."""
    return None if importlib.util.find_spec("ai_edge_litert") else "ai-edge-litert not installed"


def machine_lines(threads: int) -> list[str]:
    """The CPU, the threads used, its extensions and the library versions."""
    cpu = cpu_features()
    features = list(cpu["features"])  # type: ignore[call-overload]
    notes = [
        "AVX-512" if "avx512f" in features else "no AVX-512",
        "VNNI" if {"avx512_vnni", "avx_vnni"} & set(features) else "no VNNI",
        "BF16" if has_bf16() else "no BF16",
        "AMX" if any(f.startswith("amx") for f in features) else "no AMX",
    ]
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"CPU {cpu['model']}: {cpu['cores']} cores available, {threads} threads used; "
        f"{' '.join(features)} ({', '.join(notes)})",
        "  " + ", ".join(versions),
    ]


def _cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU ticks since boot, from /proc/stat (0, 0 where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(v) for v in fields[:8]]
    return sum(values), values[7] if len(values) > 7 else 0


class LoadWatch:
    """The machine's load over one table: load averages before/after, share of CPU stolen."""

    def __init__(self) -> None:
        self.before = os.getloadavg()
        self.ticks = _cpu_ticks()

    def describe(self, threads: int) -> str:
        after = os.getloadavg()
        total, stolen = (a - b for a, b in zip(_cpu_ticks(), self.ticks, strict=True))
        steal = 100 * stolen / total if total else 0.0
        # our own run accounts for about `threads` of the load after it
        busy = self.before[0] > 1.0 or after[0] > threads + 1.0 or steal > 5
        verdict = (
            "BUSY: other processes competed for the CPU; rerun on a quiet machine"
            if busy
            else "quiet"
        )
        fmt = "/".join
        return (
            f"load average 1/5/15 min: before {fmt(f'{v:.2f}' for v in self.before)}, after "
            f"{fmt(f'{v:.2f}' for v in after)}; CPU stolen {steal:.0f}% ({verdict})"
        )


# ---------------------------------------------------------------------- inputs and exports
def voc_ids(split: str, count: int) -> list[str]:
    return (VOC / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]


def voc_rgb(image_id: str) -> np.ndarray:
    return np.asarray(Image.open(VOC / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))


def runtime_variants(made: dict[str, Path | str], *, int8: bool = True) -> list[Variant]:
    """The ONNX Runtime and OpenVINO rows for the exports in ``made``."""

    def variant(name: str, kind: str, key: str, **options) -> Variant:
        path = made.get(key, "not asked for (--resnet-int8)")
        skip = None if isinstance(path, Path) else str(path)
        return Variant(name, kind, {"path": path, **options}, skip)

    rows = [variant("onnxruntime", "onnxruntime", "onnx")]
    if int8:
        rows.append(variant("onnxruntime int8 (QDQ)", "onnxruntime", "onnx_int8"))
    if "onnx_own" in made:  # a quantised .tflite: its own quantisation (the shipped default)
        rows.append(variant("onnxruntime int8 (own)", "onnxruntime", "onnx_own"))
    rows.append(variant("openvino f32", "openvino", "xml"))
    bf16 = variant("openvino bf16", "openvino", "xml", precision="bf16")
    bf16.skip = bf16.skip or bf16_skip()
    rows.append(bf16)
    if int8:
        rows.append(variant("openvino int8 (NNCF)", "openvino", "xml_int8"))
    return rows


# ---------------------------------------------------------------------- tables
def print_network_table(
    title: str, results: dict[str, Measured | str], base: str, threads: int, load: LoadWatch
) -> None:
    """Median/min ms, speed against ``base`` (ratio of medians), peak MiB, and the output's
    agreement with our torch float row (argmax pixels, max |Δ logits|)."""
    print(f"\n{title}")
    for line in machine_lines(threads):
        print(f"  {line}")
    reference = results.get("torch")
    peer = results.get(base)
    print(
        f"  {'variant':<26} {'median ms':>10} {'min ms':>9} {'vs ' + base:>16} {'peak MiB':>9}"
        f" {'argmax = torch':>15} {'max|Δ logits|':>14}"
    )
    for name, result in results.items():
        if isinstance(result, str):
            print(f"  {name:<26} skipped: {result}")
            continue
        ratio = f"{peer.median / result.median:.2f}×" if isinstance(peer, Measured) else "-"
        agree = delta = "-"
        if isinstance(reference, Measured) and result.classes.shape == reference.classes.shape:
            agree = f"{100 * (result.classes == reference.classes).mean():.2f}%"
            if result.logits is not None and reference.logits is not None:
                delta = f"{np.abs(result.logits - reference.logits).max():.2e}"
        print(
            f"  {name:<26} {1e3 * result.median:10.1f} {1e3 * min(result.times):9.1f} "
            f"{ratio:>16} {result.peak_mib:9.0f} {agree:>15} {delta:>14}"
        )
    print(f"  {load.describe(threads)}")


def print_speedups(
    results: dict[str, Measured | str], base: str, backbone: str, goal: float | None = None
) -> None:
    """Speed-ups over ``base`` of the row ``deeplab predict`` runs by default (``auto``), of
    the fastest float32 row and of the fastest row of any precision; checked against ``goal``
    (a speed-up) when given."""
    peer = results.get(base)
    rows = {k: v for k, v in results.items() if isinstance(v, Measured) and k != base}
    if not isinstance(peer, Measured) or not rows:
        return
    auto = auto_backend("cpu", backbone)
    row = AUTO_ROWS.get(auto, auto)
    if backbone.startswith("resnet") and native_bf16():  # large: predict runs bfloat16
        on_ov = bf16_backend() == "openvino"  # (inference.backends.plan_backend)
        auto = "openvino, bfloat16" if on_ov else "torch, bfloat16"
        row = "openvino bf16" if on_ov else "torch bf16 autocast"
    floats = [k for k in rows if "bf16" not in k and "int8" not in k]
    picks = {
        f"default (auto = {auto})": row,
        "fastest float32": min(floats, key=lambda k: rows[k].median) if floats else None,
        "fastest of all": min(rows, key=lambda k: rows[k].median),
    }
    for label, name in picks.items():
        if name in rows:
            speed = peer.median / rows[name].median
            verdict = ""
            if goal is not None:
                verdict = (
                    " (goal met)" if speed >= goal else f" (goal missed by {goal / speed:.2f}×)"
                )
            print(f"  {label}: {name}, {speed:.2f}× {base}{verdict}")


# ---------------------------------------------------------------------- sections
def network_section(args: argparse.Namespace) -> None:
    from deeplabcli import export
    from deeplabcli.exporting.tflite_quant import quantised_tflite
    from deeplabcli.weights.resolve import load_model

    image = voc_rgb(voc_ids("val", 1)[0])
    for filename, side in NETWORKS:
        path = MODELS / filename
        if not path.exists():
            print(f"\nnetwork only, {filename}: skipped: {path} not found")
            continue
        print(f"\nnetwork only, {filename}: preparing exports ...")
        model = load_model(path)
        prep = model.config.preprocessing
        x, _ = preprocess(image, prep)  # (1, 3, side, side): a VOC val photo, fitted and padded
        calibration = [
            preprocess(voc_rgb(i), prep)[0] for i in voc_ids("train", CALIBRATION_IMAGES)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            made = prepare_exports(model, Path(tmp), calibration=calibration)
            del model
            if quantised_tflite(path):  # as deeplab export FILE --int8 --static-size S,S
                made["onnx_own"] = export(path, Path(tmp) / "own.onnx", int8=True,
                                          static_size=(side, side), progress=False)  # fmt: skip
            ref = {"ref": os.fspath(path)}
            variants = [
                Variant("torch", "torch", ref),
                Variant("torch bf16 autocast", "torch", {**ref, "bf16": True}, bf16_skip()),
                *runtime_variants(made),
                Variant("TFLite XNNPACK", "tflite", {"path": path}, litert_skip()),
            ]
            load = LoadWatch()
            results = measure_round_robin(variants, x, args.threads, args.warmup, args.rounds)
        title = (
            f"network only: {filename}, 1×3×{side}×{side}, {args.rounds} rounds after "
            f"{args.warmup} warm-up (int8: calibrated on {CALIBRATION_IMAGES} VOC train images)"
        )
        print_network_table(title, results, "TFLite XNNPACK", args.threads, load)
        print_speedups(results, "TFLite XNNPACK", "mobilenetv2")


def resnet_section(args: argparse.Namespace) -> None:
    from deeplabcli.weights.convert import from_torchvision

    side = args.resnet_size
    photo = voc_rgb(voc_ids("val", 1)[0])
    for output_stride in (8, 16):
        print(f"\nResNet-101 OS {output_stride}: preparing exports ...")
        peer = torchvision_resnet(output_stride)
        model = from_torchvision(peer.state_dict(), "deeplabv3_resnet101").eval()
        model.set_output_stride(output_stride)
        del peer
        prep = model.config.preprocessing
        x = normalise(resize_rgb(photo, (side, side)), prep)[None]  # (1, 3, side, side)
        calibration = None
        if args.resnet_int8:
            calibration = [
                normalise(resize_rgb(voc_rgb(i), (side, side)), prep)[None]
                for i in voc_ids("train", CALIBRATION_IMAGES)
            ]
        with tempfile.TemporaryDirectory() as tmp:
            made = prepare_exports(model, Path(tmp), calibration=calibration)
            del model
            options = {"resnet_os": output_stride}
            variants = [
                Variant("torch", "torch", options),
                Variant("torch bf16 autocast", "torch", {**options, "bf16": True}, bf16_skip()),
                *runtime_variants(made, int8=args.resnet_int8),
                Variant("torchvision eager", "torchvision", options),
            ]
            load = LoadWatch()
            results = measure_round_robin(variants, x, args.threads, args.warmup, args.rounds)
        title = (
            f"ResNet-101 (torchvision head, random weights), OS {output_stride}, "
            f"1×3×{side}×{side}, {args.rounds} rounds after {args.warmup} warm-up"
        )
        print_network_table(title, results, "torchvision eager", args.threads, load)
        print_speedups(results, "torchvision eager", "resnet101", goal=2.0)


# ---------------------------------------------------------------------- end to end
@dataclass
class ProcessRun:
    """One whole process: wall and CPU (user + system) seconds, peak resident MiB."""

    wall: float
    cpu: float
    peak_mib: float


def deeplab_command() -> list[str]:
    """The ``deeplab`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("deeplab")
    return [os.fspath(script)] if script.exists() else [sys.executable, "-m", "deeplabcli"]


#: Runs one command and prints its wall seconds, CPU seconds, ru_maxrss (KiB) and exit code.
#: A small process of its own: Linux starts a child's ru_maxrss at its parent's peak, which
#: for this benchmark's own process (torch, exports) would hide the child's.
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], "wb") as log:
    child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=log)
    _, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps([wall, cpu, usage.ru_maxrss, os.waitstatus_to_exitcode(status)]))
"""


def run_process(argv: list[str], env: dict[str, str], log: Path) -> tuple[ProcessRun, int]:
    """Run ``argv`` to its end (stdout discarded, stderr into ``log``): its own wall time,
    CPU time and peak memory (``wait4``, in :data:`LAUNCHER`), and its exit code."""
    launcher = [sys.executable, "-c", LAUNCHER, os.fspath(log), *argv]
    report = subprocess.run(launcher, env=env, capture_output=True, text=True, check=True)
    wall, cpu, peak_kib, code = json.loads(report.stdout)
    return ProcessRun(wall, cpu, peak_kib / 1024), code


def measure_processes(
    commands: dict[str, list[str] | str], env: dict[str, str], warmup: int, runs: int, logs: Path
) -> dict[str, tuple[ProcessRun, list[ProcessRun]] | str]:
    """Each command ``warmup`` + ``runs`` times, alternating (the order reversing every round):
    (its first run, its timed runs), or why it was skipped or failed."""
    results: dict[str, tuple[ProcessRun, list[ProcessRun]] | str] = {}
    first: dict[str, ProcessRun] = {}
    timed: dict[str, list[ProcessRun]] = {}
    order = [name for name, argv in commands.items() if not isinstance(argv, str)]
    for round_index in range(warmup + runs):
        for name in list(order):
            log = logs / f"{list(commands).index(name)}-{round_index}.log"
            run, code = run_process(commands[name], env, log)  # type: ignore[arg-type]
            if code != 0:
                tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                results[name] = f"failed (exit code {code}): {tail[:200]}"
                order.remove(name)
                continue
            first.setdefault(name, run)
            if round_index >= warmup:
                timed.setdefault(name, []).append(run)
        order.reverse()
    for name, argv in commands.items():
        if isinstance(argv, str):
            results[name] = argv
        elif name not in results:
            results[name] = (first[name], timed.get(name, []))
    return {name: results[name] for name in commands}


def print_process_table(
    title: str, results: dict, base: str, count: int, threads: int, load: LoadWatch
) -> None:
    print(f"\n{title}")
    for line in machine_lines(threads):
        print(f"  {line}")
    peer = results.get(base)
    peer_wall = statistics.median(r.wall for r in peer[1]) if isinstance(peer, tuple) else None
    print(
        f"  {'variant':<38} {'median s':>9} {'min s':>7} {'images/s':>9} {'CPU s':>7} "
        f"{'vs TFLite':>10} {'peak MiB':>9} {'first run: s':>13} {'MiB':>5}"
    )
    for name, result in results.items():
        if isinstance(result, str):
            print(f"  {name:<38} skipped: {result}")
            continue
        first, runs = result
        wall = statistics.median(r.wall for r in runs)
        cpu = statistics.median(r.cpu for r in runs)
        peak = max(r.peak_mib for r in runs)
        ratio = f"{peer_wall / wall:.2f}×" if peer_wall else "-"
        print(
            f"  {name:<38} {wall:9.2f} {min(r.wall for r in runs):7.2f} {count / wall:9.1f} "
            f"{cpu:7.2f} {ratio:>10} {peak:9.0f} {first.wall:13.2f} {first.peak_mib:5.0f}"
        )
    print(f"  {load.describe(threads)}")


def mask_agreement(ours: Path, peer: Path, expected: int) -> str:
    """Share of pixels with the same class in the masks of two output folders (by name), and
    how many of the ``expected`` masks both wrote."""
    same = total = count = 0
    for path in sorted(ours.rglob("*.png")):
        other = peer / path.relative_to(ours)
        if other.exists():
            a, b = np.asarray(Image.open(path)), np.asarray(Image.open(other))
            same, total, count = same + int((a == b).sum()), total + a.size, count + 1
    share = f"{100 * same / total:.2f}% of pixels" if total else "nothing to compare"
    return f"{share} ({count} of {expected} masks written by both)"


def e2e_commands(
    cli: list[str], model: Path | None, peer: Path, inputs: list[Path], work: Path, target: str,
    has_backend: bool, threads: int,
) -> tuple[dict[str, list[str] | str], dict[str, Path]]:  # fmt: skip
    """Each variant's command (or why it is skipped) and the folder its masks go to, for
    ``deeplab predict`` with ``--model model`` (None: the default model) and the TFLite loop
    running ``peer``, on ``inputs`` writing ``target`` under ``work``."""
    commands: dict[str, list[str] | str] = {}
    outputs: dict[str, Path] = {}
    missing = next((f"{p} not found" for p in (model, peer) if p and not p.exists()), None)
    reference = ["--model", os.fspath(model)] if model else []
    for name, extra in (
        ("deeplab predict (defaults)", []),
        *[(f"deeplab predict --backend {b}", ["--backend", b]) for b in BACKENDS],
    ):
        out = work / f"{target}-{len(commands)}" / target
        outputs[name] = out if target == "masks" else out.parent
        commands[name] = missing or [
            *cli, "predict", *map(os.fspath, inputs), "-o", os.fspath(out), "--overwrite",
            *reference, *extra,
        ]  # fmt: skip
        if extra and not has_backend:
            commands[name] = "`deeplab predict --help` has no --backend option yet"
        elif extra and not backend_installed(extra[1]):
            commands[name] = f"{extra[1]} is not installed"
    out = work / f"{target}-peer" / target
    outputs[E2E_PEER] = out if target == "masks" else out.parent
    commands[E2E_PEER] = litert_skip() or missing or [
        sys.executable, os.fspath(HERE / "_tflite_predict.py"), os.fspath(peer),
        *map(os.fspath, inputs), "-o", os.fspath(out), "--threads", str(threads),
    ]  # fmt: skip
    return commands, outputs


def e2e_section(args: argparse.Namespace) -> None:
    images = [VOC / "JPEGImages" / f"{i}.jpg" for i in voc_ids("val", args.images)]
    cli = deeplab_command()
    usage = subprocess.run([*cli, "predict", "--help"], capture_output=True, text=True).stdout
    has_backend = "--backend" in usage
    default = f"auto = {auto_backend('cpu')}" if has_backend else "no --backend option: torch"
    print(f"\nend to end: deeplab predict's default backend here: {default}")
    voc = (f"{len(images)} VOC val images", images, "masks")
    photo = (f"one photo ({PHOTO.name})", [PHOTO], "mask.png")
    tables = [(*model, *voc) for model in E2E_MODELS] + [(*E2E_MODELS[0], *photo)]
    with tempfile.TemporaryDirectory() as tmp_name:
        for index, (model_label, model, peer, label, inputs, target) in enumerate(tables):
            work = Path(tmp_name) / f"table-{index}"
            (work / "logs").mkdir(parents=True)
            commands, outputs = e2e_commands(
                cli, MODELS / model if model else None, MODELS / peer, inputs, work, target,
                has_backend, args.threads,
            )  # fmt: skip
            # each table its own export cache, so that its first runs show the cold export
            env = {**os.environ, "DEEPLAB_EXPORT_CACHE": os.fspath(work / "cache")}
            env["HF_HUB_OFFLINE"] = "1"  # the models are embedded or local: nothing to download
            load = LoadWatch()
            results = measure_processes(commands, env, args.warmup, args.rounds, work / "logs")
            title = (
                f"end to end, whole processes, {model_label}: {label}, {args.rounds} runs each "
                f"after {args.warmup} warm-up (first run: empty export cache)"
            )
            print_process_table(title, results, E2E_PEER, len(inputs), args.threads, load)
            print_e2e_checks(results, outputs, len(inputs), one_photo=target == "mask.png")


def print_e2e_checks(
    results: dict, outputs: dict[str, Path], expected: int, *, one_photo: bool
) -> None:
    """The goals, and how the masks compare with the TFLite loop's (``expected`` masks)."""
    peer = E2E_PEER
    ours = results.get("deeplab predict (defaults)")
    if isinstance(ours, tuple):
        wall = statistics.median(r.wall for r in ours[1])
        peak = max(r.peak_mib for r in ours[1])
        if one_photo:
            print(
                f"  goal ≤ {E2E_WALL_GOAL_S} s and ≤ {E2E_PEAK_GOAL_MIB} MiB (defaults): "
                f"{wall:.2f} s ({_verdict(wall <= E2E_WALL_GOAL_S, wall / E2E_WALL_GOAL_S)}), "
                f"{peak:.0f} MiB ({_verdict(peak <= E2E_PEAK_GOAL_MIB, peak / E2E_PEAK_GOAL_MIB)})"
            )
        elif isinstance(results.get(peer), tuple):
            speed = statistics.median(r.wall for r in results[peer][1]) / wall
            print(
                f"  goal ≥ 1.0× the TFLite loop (defaults): {speed:.2f}× "
                f"({_verdict(speed >= 1, 1 / speed)})"
            )
    if isinstance(results.get(peer), tuple):
        for name, result in results.items():
            if name != peer and isinstance(result, tuple):
                agree = mask_agreement(outputs[name], outputs[peer], expected)
                print(f"  masks of {name} = TFLite loop's: {agree}")


def _verdict(met: bool, factor: float) -> str:
    return "met" if met else f"missed by {factor:.2f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=["network", "resnet", "e2e", "all"], default="all")
    parser.add_argument("--threads", type=int, default=int(cpu_features()["cores"]))  # type: ignore[call-overload]
    parser.add_argument("--rounds", type=int, help="timed rounds (default: per section)")
    parser.add_argument("--warmup", type=int, help="warm-up rounds (default: per section)")
    parser.add_argument("--images", type=int, default=120, help="VOC val images for e2e")
    parser.add_argument("--resnet-size", type=int, default=513, help="ResNet input side")
    parser.add_argument("--resnet-int8", action="store_true", help="also int8 ResNet-101")
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds and images")
    args = parser.parse_args()
    sections = ("network", "resnet", "e2e") if args.section == "all" else (args.section,)
    runners = {"network": network_section, "resnet": resnet_section, "e2e": e2e_section}
    defaults = {  # (warm-up, rounds): full, quick
        "network": ((3, 20), (1, 3)), "resnet": ((1, 5), (1, 2)), "e2e": ((1, 5), (1, 3)),
    }  # fmt: skip
    if args.quick:
        args.images = min(args.images, 8)
        args.resnet_size = min(args.resnet_size, 257)
    asked = (args.warmup, args.rounds)
    for section in sections:
        warmup, rounds = defaults[section][args.quick]
        args.warmup = warmup if asked[0] is None else asked[0]
        args.rounds = rounds if asked[1] is None else asked[1]
        runners[section](args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
