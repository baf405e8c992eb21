"""Worker processes of ``runtime_speed.py``: one network variant per process, driven round-robin.

Each variant (our torch predict path, torch bf16, ONNX Runtime, OpenVINO, the TFLite
interpreter, torchvision eager) is built in its own spawned process, so that each reports its
own peak memory (``ru_maxrss``) and none shares an allocator, thread pool or imported library
with another (an ONNX Runtime worker never imports torch). The orchestrating process sends
``run`` to the workers in turn (each round runs every variant once; the order reverses every
round), and each answers with the seconds of one forward pass on the same input; ``output``
returns that forward pass's logits (C, H, W) float32 (None where the network ends in ArgMax)
and class map (H, W) uint8, ``peak`` the worker's peak resident memory in MiB.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: a built variant: run() -> raw output (timed), convert(raw) -> (logits | None, class map)
Built = tuple[Callable[[], Any], Callable[[Any], tuple[np.ndarray | None, np.ndarray]]]
SETTLE_S = 0.02  # pause between two variants' runs, so a runtime's spinning threads go idle


@dataclass
class Variant:
    """One row of a table: ``kind`` says which builder runs it, with ``options``."""

    name: str
    kind: str  # torch | torchvision | onnxruntime | openvino | tflite
    options: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None  # why it is not measured (printed instead of numbers)


@dataclass
class Measured:
    """What a variant measured: seconds per forward pass (timed rounds only), its output on
    the input and its worker's peak resident memory."""

    times: list[float]
    logits: np.ndarray | None  # float32 (C, H, W), None where the network outputs classes
    classes: np.ndarray  # uint8 (H, W)
    peak_mib: float

    @property
    def median(self) -> float:
        return statistics.median(self.times)


# ---------------------------------------------------------------------- builders (in the worker)
def _classes(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=0).astype(np.uint8)


def _from_logits(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1, C, H, W) logits → ((C, H, W) float32, (H, W) class map)."""
    logits = np.ascontiguousarray(out[0], dtype=np.float32)
    return logits, _classes(logits)


def _our_model(options: dict[str, Any]) -> Any:
    """Our DeepLabV3: a model reference (``ref``), or torchvision's ResNet-101 with seed-0
    random weights converted (``resnet_os``: the output stride to switch it to)."""
    if "ref" in options:
        from deeplabcli.weights.resolve import load_model

        return load_model(options["ref"])
    from deeplabcli.weights.convert import from_torchvision

    peer = torchvision_resnet(options["resnet_os"])
    model = from_torchvision(peer.state_dict(), "deeplabv3_resnet101").eval()
    model.set_output_stride(options["resnet_os"])
    return model


def torchvision_resnet(output_stride: int) -> Any:
    """torchvision's DeepLabv3-ResNet-101 (torchvision head, 21 classes) with the random
    weights of seed 0 (the same in every process), at OS 8 or re-strided to OS 16."""
    import torch
    from model_speed import torchvision_model  # benchmarks/model_speed.py

    torch.manual_seed(0)
    return torchvision_model(output_stride).eval()


def build_torch(options: dict[str, Any], threads: int, x: np.ndarray) -> Built:
    """Our predict path (``Segmenter`` on a CPU): BN folded, channels-last, conv+activation
    fused (``cpu_fusion``), under ``torch.inference_mode()``. ``bf16``: CPU autocast to
    bfloat16 instead of the fusion (the fused oneDNN calls are float32 only)."""
    import torch

    from deeplabcli.models.fuse import optimize_for_inference

    torch.set_num_threads(threads)
    bf16 = bool(options.get("bf16"))
    network = optimize_for_inference(
        _our_model(options), channels_last=True, cpu_fusion=not bf16, inplace=True
    )
    pixels = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return network(pixels)["out"]

    return run, lambda out: _from_logits(out.float().numpy())


def build_torchvision(options: dict[str, Any], threads: int, x: np.ndarray) -> Built:
    """torchvision's model as its users run it: ``eval()``, ``torch.inference_mode()``."""
    import torch

    torch.set_num_threads(threads)
    model = torchvision_resnet(options["resnet_os"])
    pixels = torch.from_numpy(x)

    def run() -> Any:
        with torch.inference_mode():
            return model(pixels)["out"]

    return run, lambda out: _from_logits(out.numpy())


def build_onnxruntime(options: dict[str, Any], threads: int, x: np.ndarray) -> Built:
    from deeplabcli.runtimes.sessions import OnnxRuntimeNetwork

    network = OnnxRuntimeNetwork(Path(options["path"]), threads=threads)
    return (lambda: network(x)), _from_logits


def build_openvino(options: dict[str, Any], threads: int, x: np.ndarray) -> Built:
    from deeplabcli.runtimes.sessions import OpenVinoNetwork

    precision = options.get("precision", "f32")
    network = OpenVinoNetwork(Path(options["path"]), threads=threads, precision=precision)
    return (lambda: network(x)), _from_logits


def build_tflite(options: dict[str, Any], threads: int, x: np.ndarray) -> Built:
    """The TFLite interpreter (XNNPACK delegate, on by default) on the original ``.tflite``
    file: NHWC input, float (the same normalised pixels) or uint8 (quantised from them with
    the input's scale and zero point: for Google's model exactly the photo's bytes)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(options["path"]), num_threads=threads)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if details["dtype"] == np.uint8:
        scale, zero = details["quantization"]
        nhwc = np.clip(np.rint(nhwc / scale + zero), 0, 255).astype(np.uint8)
    index, output = details["index"], interpreter.get_output_details()[0]["index"]

    def run() -> np.ndarray:
        interpreter.set_tensor(index, nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    def convert(out: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        if out.ndim == 3:  # ArgMax inside the graph: (1, H, W) class indices
            return None, out[0].astype(np.uint8)
        return _from_logits(out.transpose(0, 3, 1, 2))

    return run, convert


BUILDERS: dict[str, Callable[[dict[str, Any], int, np.ndarray], Built]] = {
    "torch": build_torch,
    "torchvision": build_torchvision,
    "onnxruntime": build_onnxruntime,
    "openvino": build_openvino,
    "tflite": build_tflite,
}


def peak_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM, whose count starts at exec (Linux
    ``ru_maxrss`` would start at the spawning process's own peak), else ``ru_maxrss``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_main(conn, kind: str, options: dict[str, Any], threads: int, x: np.ndarray) -> None:
    """The worker loop (the target of the spawned process); see the module docstring."""
    with open(os.devnull, "w") as quiet:  # runtimes' own log lines would break the tables
        os.dup2(quiet.fileno(), 1)
        os.dup2(quiet.fileno(), 2)
    try:
        run, convert = BUILDERS[kind](options, threads, x)
        last = run()
    except Exception as error:  # reported as the variant's skip reason
        conn.send(("error", f"{type(error).__name__}: {error}".splitlines()[0][:300]))
        traceback.clear_frames(error.__traceback__)
        return
    conn.send(("ready", peak_mib()))
    while True:
        command = conn.recv()
        if command == "run":
            start = time.perf_counter()
            last = run()
            conn.send(time.perf_counter() - start)
        elif command == "output":
            conn.send(convert(last))
        elif command == "peak":
            conn.send(peak_mib())
        else:
            return


# ---------------------------------------------------------------------- orchestrating side
def measure_round_robin(
    variants: list[Variant], x: np.ndarray, threads: int, warmup: int, rounds: int
) -> dict[str, Measured | str]:
    """Each measurable variant in its own worker; ``warmup`` + ``rounds`` rounds, each running
    every variant once (order reversed every round); a :class:`Measured` per variant, or the
    reason it was not measured."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results: dict[str, Measured | str] = {}
    workers = {}
    try:
        for variant in variants:  # started one at a time: building does not compete
            if variant.skip:
                results[variant.name] = variant.skip
                continue
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, variant.kind, variant.options, threads, x),
                daemon=True,
            )
            process.start()
            child.close()
            try:
                status, detail = parent.recv()
            except EOFError:  # it crashed while building (a runtime's abort)
                process.join()
                status, detail = "error", f"its worker died (exit code {process.exitcode})"
            if status == "error":
                results[variant.name] = f"failed: {detail}"
                process.join()
                continue
            workers[variant.name] = (process, parent)
        times: dict[str, list[float]] = {name: [] for name in workers}
        order = list(workers)
        for round_index in range(warmup + rounds):
            for name in order:
                _, conn = workers[name]
                conn.send("run")
                seconds = conn.recv()
                if round_index >= warmup:
                    times[name].append(seconds)
                time.sleep(SETTLE_S)
            order.reverse()
        for name, (_, conn) in workers.items():
            conn.send("output")
            logits, classes = conn.recv()
            conn.send("peak")
            results[name] = Measured(times[name], logits, classes, conn.recv())
    finally:
        for process, conn in workers.values():
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send("stop")
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return {v.name: results[v.name] for v in variants if v.name in results}
