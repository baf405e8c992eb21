"""What an exported file says about its network: our metadata as string → string pairs.

ONNX files keep it in ``metadata_props``, OpenVINO IR in ``rt_info["deeplabcli"]``; the keys
are the same. A user without deeplabcli reads the preprocessing from ``deeplabcli.preprocessing``
(JSON): RGB pixels as float32 (N, 3, H, W), ``(pixel / 255 - mean) / std``; for
``resize = "fit"`` the long side scaled to ``size`` and the rest padded with zeros (the mean
colour after normalisation) at the bottom and right; the output ``logits`` are (N, C, H, W) at
the input size, and their argmax over C is the class map.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import ModelConfig
from ..errors import ModelLoadError
from .extras import require_module

PREFIX = "deeplabcli."
FORMAT_VERSION = "1"
#: the graph's input and output names (documented: plain ONNX Runtime users need them)
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
#: the metadata keys (after the prefix), for runtimes that are read key by key
METADATA_KEYS = (
    "format_version", "config", "provenance", "architecture", "output_stride", "classes",
    "palette", "preprocessing", "int8", "static_size",
)  # fmt: skip


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file holds, read back from its metadata."""

    config: ModelConfig  # the architecture, classes and preprocessing (output stride included)
    provenance: dict[str, Any]  # where the weights came from, plus how they were exported
    int8: bool  # weights and activations quantised to 8 bits (post-training, calibrated)
    static_size: tuple[int, int] | None  # the only (H, W) the graph takes; None = any


def model_metadata(
    config: ModelConfig,
    provenance: Mapping[str, Any],
    *,
    palette: list[list[int]],
    int8: bool = False,
    static_size: tuple[int, int] | None = None,
) -> dict[str, str]:
    """The metadata pairs of an exported network (without the ``deeplabcli.`` prefix in the
    docs, with it in the file)."""
    prep = config.preprocessing
    preprocessing = {
        "input": INPUT_NAME, "output": OUTPUT_NAME, "layout": "NCHW", "channels": "RGB",
        "dtype": "float32", "formula": "(pixel / 255 - mean) / std",
        "mean": list(prep.mean), "std": list(prep.std), "resize": prep.resize,
        "size": prep.size, "pad": "zeros at the bottom and right, after normalisation",
    }  # fmt: skip
    pairs = {
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "provenance": json.dumps(dict(provenance), default=str),
        "architecture": config.arch,
        "output_stride": str(config.output_stride),
        "classes": json.dumps(list(config.class_names)),
        "palette": json.dumps(palette),
        "preprocessing": json.dumps(preprocessing),
        "int8": "true" if int8 else "false",
        "static_size": "" if static_size is None else f"{static_size[0]},{static_size[1]}",
    }
    return {PREFIX + key: value for key, value in pairs.items()}


def parse_metadata(pairs: Mapping[str, str], where: str) -> ExportInfo:
    """An :class:`ExportInfo` from the pairs :func:`model_metadata` wrote; a file without them
    (an ONNX model exported by something else) or with damaged ones is a ModelLoadError."""
    if PREFIX + "config" not in pairs:
        raise ModelLoadError(
            f"{where} has no deeplabcli metadata, so it was not written by `deeplab export`. "
            "Export the model with `deeplab export MODEL -o FILE`."
        )
    version = pairs.get(PREFIX + "format_version", "")
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{where} has deeplabcli metadata version {version!r}, this deeplabcli reads "
            f"{FORMAT_VERSION!r}. Export it again with this version."
        )
    try:
        config = ModelConfig.from_dict(json.loads(pairs[PREFIX + "config"]), where=where)
        provenance = json.loads(pairs.get(PREFIX + "provenance", "{}"))
        static = pairs.get(PREFIX + "static_size", "")
        static_size = tuple(int(v) for v in static.split(",")) if static else None
    except (ValueError, TypeError) as error:
        raise ModelLoadError(
            f"{where} has damaged deeplabcli metadata ({error}). Export the model again."
        ) from None
    return ExportInfo(
        config=config,
        provenance=provenance if isinstance(provenance, dict) else {},
        int8=pairs.get(PREFIX + "int8") == "true",
        static_size=static_size,  # type: ignore[arg-type]
    )


def onnx_metadata(path: os.PathLike) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (read with the onnx package, weights not loaded)."""
    require_module("onnx", "onnx", f"reading {path}")
    import onnx

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"{path} is not a readable ONNX model ({error}).") from None
    return {p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
