"""Where the network runs (``--backend``): torch, or a runtime (ONNX Runtime, OpenVINO) that
runs it exported.

:func:`plan_backend` turns the option into a backend and a device (``auto``: see
:func:`~deeplabcli.runtimes.extras.auto_backend`; the runtimes run on the CPU), and
:func:`build_network` makes what a :class:`~deeplabcli.inference.Segmenter` calls: for torch the
inference-optimised module, for a runtime a :class:`RuntimeModule` around the exported network.
A :class:`~deeplabcli.models.DeepLabV3` is exported once into the cache
(:func:`~deeplabcli.exporting.cache.cached_export`: later runs, in this process or another, find
the file by the weights' hash); an :class:`~deeplabcli.runtimes.ExportedModel` runs as it is.
Pre- and post-processing (resizing, normalisation, multi-scale, flip, tiles, argmax) stay the
Segmenter's, the same for every backend. :func:`load_inference_model` is the model loader of
predict and eval: an exported ``.onnx``/``.xml`` file or any other model reference.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from ..config import InferenceConfig, ModelConfig
from ..errors import ConfigError
from ..exporting.cache import cached_export
from ..models import DeepLabV3
from ..models.fuse import optimize_for_inference
from ..runtimes import ExportedModel, is_exported_path, load_exported
from ..runtimes.exported import exported_backend
from ..runtimes.extras import (
    RUNTIME_MODULES,
    auto_backend_for_model,
    bf16_backend,
    require_backend,
    require_module,
)
from ..runtimes.sessions import RuntimeNetwork, open_network
from ..weights import resolve
from ..weights.shipped import shipped_export
from .device import device_of, resolve_device, same_device
from .precision import autocast_dtype

#: What predict and eval run: a torch model, or an exported file in its runtime.
InferenceModel = DeepLabV3 | ExportedModel
#: The backends that run an exported network (on the CPU) rather than the torch module.
RUNTIMES = ("onnxruntime", "openvino")


def load_inference_model(
    ref: str | os.PathLike | None, options: InferenceConfig | None = None
) -> InferenceModel:
    """The model of ``--model REF`` for predict and eval (None: the default model): any
    reference loaded as a torch model (under ``--backend auto``, the shipped int8 export of the
    default model where it serves: :mod:`~deeplabcli.weights.shipped`), or an exported
    ``.onnx``/``.xml`` file opened in the runtime ``options.backend`` names (default ``auto``: see
    :func:`~deeplabcli.runtimes.exported.exported_backend`), with the threads of
    ``options.streams`` (:func:`runtime_threads`). Mistakes that need no file (``--backend
    torch``, a CUDA device) are refused before the file is opened."""
    if ref is None or not is_exported_path(ref):
        shipped = None if options is None else shipped_export(
            ref, backend=options.backend, device=str(options.device),
            output_stride=options.output_stride, scales=options.scales, tile=options.tile,
        )  # fmt: skip
        if shipped is None:
            return resolve.load_model(ref)
        ref = shipped  # the default model's int8 export, shipped with the package
    options = options or InferenceConfig(backend="auto")
    if options.backend == "torch":
        raise ConfigError(_no_torch_weights(ref))
    runtime = exported_backend(ref, options.backend or "auto")
    backend_device(runtime, options.device)
    return load_exported(ref, runtime, threads=runtime_threads(options.streams))


def plan_backend(model: InferenceModel, options: InferenceConfig) -> tuple[str, torch.device]:
    """The backend ``model`` runs on for ``options.backend`` (``auto`` resolved) and the device
    of its inputs and outputs. None (the library's default): torch for a torch model, the
    runtime an exported file was opened in. ``auto`` never fails for a missing runtime: a
    torch model falls back to torch; an exported file runs on the runtime it was opened in. A
    torch model that runs in bfloat16 on this CPU (:mod:`.precision`) stays on torch."""
    backend = options.backend
    if isinstance(model, ExportedModel):
        if backend == "torch":
            raise ConfigError(_no_torch_weights(model.path))
        if backend in (None, "auto"):
            backend = model.backend
    elif backend is None:
        backend = "torch"
    elif backend == "auto":
        device = options.device
        on = resolve_device(device).type if str(device) == "auto" else str(device)
        backend = auto_backend_for_model(on, model.config.backbone)
        if on == "cpu" and autocast_dtype(options.amp, torch.device("cpu"), model):
            backend = bf16_backend()  # bfloat16: ~2-3× the runtimes' float32 (precision.py)
    return backend, backend_device(backend, options.device)


def backend_device(backend: str, device: str | torch.device) -> torch.device:
    """The torch device of ``backend``'s inputs and outputs: ``device`` for torch; the CPU for
    the runtimes, which run there (``auto`` means the CPU for them)."""
    if backend == "torch":
        return resolve_device(device)
    if str(device) not in ("auto", "cpu"):
        raise ConfigError(
            f"the {backend} backend runs on the CPU, not on {device}. Use --device cpu (or "
            f"auto) with --backend {backend}, or --backend torch to run on {device}."
        )
    return torch.device("cpu")


def runtime_threads(streams: int | None = None) -> int:
    """The intra-op threads of a runtime session that runs ``streams`` batches side by side
    (None: one): this process's threads (``torch.get_num_threads()``) shared between them."""
    return max(1, torch.get_num_threads() // (streams or 1))


class RuntimeModule(nn.Module):
    """A runtime network as the module a Segmenter calls: float32 (N, 3, H, W) normalised
    pixels on the CPU (contiguous) → ``{"out": float32 (N, C, H, W) logits}``. The input is
    handed over as a numpy view of the tensor and the logits come back as a tensor over the
    runtime's output array: no copies of our own. Safe to call from several threads."""

    def __init__(self, runtime: RuntimeNetwork) -> None:
        super().__init__()
        self.runtime = runtime
        self.eval()  # inference only (a module in training mode would get one stream)

    @property
    def backend(self) -> str:
        return self.runtime.backend

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": torch.from_numpy(self.runtime(x.detach().float().numpy()))}


def build_network(
    model: InferenceModel,
    options: InferenceConfig,
    backend: str,
    device: torch.device,
    *,
    optimize: bool = True,
    inplace: bool = False,
    reference: str | os.PathLike | bool | None = False,
    autocast: bool = False,
) -> tuple[nn.Module, ModelConfig]:
    """The module a Segmenter runs for ``model`` on ``backend`` (from :func:`plan_backend`) and
    the configuration it runs with (at ``options.output_stride``).

    torch: ``model`` itself, a copy, or (``optimize``) a BN-folded channels-last copy (the model
    itself with ``inplace``; oneDNN-fused on a CPU unless it runs under ``autocast``), on
    ``device``. A runtime: a :class:`RuntimeModule` over the cached
    export of a torch model (``reference``, the model reference it was loaded from, is
    remembered beside it: see :func:`~deeplabcli.exporting.cache.cached_export`), or over an
    exported file's network (reopened for another runtime, or for more than one stream: a
    session's threads are fixed when it opens; see :func:`runtime_threads`)."""
    output_stride = options.output_stride
    if isinstance(model, ExportedModel):
        if output_stride not in (None, model.output_stride):
            raise ConfigError(
                f"{model.path} was exported at output stride {model.output_stride}, which an "
                f"exported graph cannot switch. Export the model again with --os "
                f"{output_stride} (deeplab export MODEL -o FILE --os {output_stride}), or leave "
                "--os out."
            )
        runtime = model.network
        if backend != model.backend or (options.streams or 1) > 1:  # another runtime or threads
            threads = runtime_threads(options.streams)
            runtime = open_network(model.path, backend, threads=threads)
        return RuntimeModule(runtime), model.config
    if output_stride is not None:
        model.config.check_output_stride(output_stride)
    if backend in RUNTIMES:
        require_backend(backend)  # before exporting: one line naming the pip command
        what = f"running a {model.config.arch} model on {backend}"
        require_module("onnx", RUNTIME_MODULES[backend][1], f"{what} (it is exported first)")
        path = cached_export(model, backend, output_stride=output_stride, reference=reference)
        precision = "bf16" if autocast and backend == "openvino" else "f32"
        runtime = open_network(path, backend, threads=runtime_threads(options.streams),
                               precision=precision)  # fmt: skip
        config = model.config
        if output_stride is not None and output_stride != config.output_stride:
            config = config.replace(output_stride=output_stride)
        return RuntimeModule(runtime), config
    if optimize:
        network = optimize_for_inference(  # oneDNN's fused float32 ops do not autocast
            model, channels_last=True, inplace=inplace,
            cpu_fusion=device.type == "cpu" and not autocast,
        )  # fmt: skip
    elif output_stride not in (None, model.output_stride) or not same_device(
        device_of(model), device
    ):
        network = copy.deepcopy(model)
    else:
        network = model  # shared with the caller: eval mode is set per call and restored
    if output_stride is not None and output_stride != network.output_stride:
        network.set_output_stride(output_stride)
    network = network.to(device)
    return network, network.config


def check_static_size(
    static_size: tuple[int, int] | None,
    canvases: list[tuple[int, int]],
    image: str,
    where: object,
) -> None:
    """Raise :class:`ConfigError` when a model exported with ``--static-size`` (``static_size``
    = its only (H, W); None: any size) would get network inputs of other sizes (``canvases``,
    one per scale) for ``image`` (e.g. "the 500×375 image x.jpg"); ``where``: the file."""
    if static_size is None:
        return
    for height, width in canvases:
        if (height, width) != tuple(static_size):
            raise ConfigError(
                f"{where} takes only {static_size[1]}×{static_size[0]} inputs (exported with "
                f"--static-size), but {image} needs a {width}×{height} input. Export the model "
                "again without --static-size, or use it with the scales and images it was "
                "exported for."
            )


def _no_torch_weights(path: str | os.PathLike) -> str:
    return (
        f"{os.fspath(path)} is an exported model, with no torch weights in it, so it cannot run "
        "on --backend torch. Use --backend auto, onnxruntime or openvino, or the model it was "
        "exported from (deeplab info shows its provenance)."
    )


__all__ = [
    "RUNTIMES", "InferenceModel", "RuntimeModule", "backend_device", "build_network",
    "check_static_size", "load_inference_model", "plan_backend", "runtime_threads",
]  # fmt: skip
