"""The checkpoint directory format: ``config.json`` + ``model.safetensors``.

``config.json`` holds the :class:`ModelConfig` (architecture, class names, preprocessing), a
``format_version`` and the checkpoint's provenance; ``model.safetensors`` holds the weights (the
config is repeated in its metadata so the file alone still describes its model). A training run
adds ``train_state.pt`` and ``metrics.jsonl`` to the same directory; loading ignores every file
it does not know. Such a directory can be uploaded to the Hugging Face Hub as it is.

Writes are atomic: :func:`save_checkpoint` builds the directory under a temporary sibling name and
renames it into place; :func:`write_model_files` replaces the two files of an existing run
directory one by one, each through a temporary name.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config import ModelConfig
from ..config.fields import show
from ..errors import ConfigError, DiskFullError, ModelLoadError, OutputWriteError
from ..files import (
    atomic_file,
    check_writable,
    new_file_mode,
    read_json,
    temporary_sibling,
    write_text_atomic,
)
from ..models import DeepLabV3, list_archs, load_strict
from .formats import read_safetensors

FORMAT_NAME = "deeplabcli"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: safetensors metadata key under which the model config JSON is stored
METADATA_CONFIG_KEY = "deeplabcli_config"


def make_provenance(
    source: str, *, converted_from: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Where a checkpoint came from: ``source`` (the reference it was loaded from),
    ``converted_from`` (``transformers``, ``torchvision``, ``tflite`` or None for our own
    format), the creation time (UTC, ISO 8601) and this deeplabcli version, plus ``extra``."""
    return {
        "source": source,
        "converted_from": converted_from,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "deeplabcli_version": __version__,
        **extra,
    }


def checkpoint_config_dict(model: DeepLabV3, provenance: Mapping[str, Any] | None) -> dict:
    """The JSON document written as ``config.json``."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "provenance": dict(provenance or model.provenance),
    }


def is_checkpoint_config(data: Mapping[str, Any]) -> bool:
    """True if a parsed ``config.json`` is in our format (not transformers' or anyone else's)."""
    return data.get("format") == FORMAT_NAME and "model" in data


def save_checkpoint(
    model: DeepLabV3,
    directory: str | Path,
    *,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` as a checkpoint directory, atomically.

    The files are written into a temporary sibling directory that is then renamed to
    ``directory``. An existing checkpoint there is replaced only after the new one is complete
    (``overwrite=False`` refuses instead); a directory holding anything else (other files, a
    training run) is never replaced: use :func:`write_model_files` for run directories. ``provenance`` defaults to ``model.provenance`` when the model has one.
    """
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise OutputWriteError(
                f"{directory} exists and is not a directory. Choose another output."
            )
        if not overwrite:
            raise OutputWriteError(
                f"{directory} already exists. Pass --overwrite (overwrite=True) to replace it, "
                "or choose another output directory."
            )
        present = sorted(p.name for p in directory.iterdir())
        if present and CONFIG_NAME not in present:
            raise OutputWriteError(
                f"{directory} is not empty and holds no checkpoint, so it is not replaced. "
                "Choose another output directory."
            )
        others = [name for name in present if name not in (CONFIG_NAME, WEIGHTS_NAME)]
        if others:
            raise OutputWriteError(
                f"{directory} also holds {', '.join(others[:3])}"
                f"{' ...' if len(others) > 3 else ''} (a training run?), so it is not replaced. "
                "Choose another output directory."
            )
    else:
        check_writable(directory, "Choose another output directory")  # e.g. under a file
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
        os.chmod(tmp, new_file_mode(directory=True))  # as any new folder, not mkdtemp's 0700
    except OSError as error:
        raise OutputWriteError(
            f"cannot write to {parent} ({error.strerror}). Check the path."
        ) from None
    try:
        _write_files(model, tmp, provenance)
        if directory.exists():
            if not overwrite:  # absent when checked above: another writer came first
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
            old = temporary_sibling(directory).with_suffix(".old")
            os.replace(directory, old)
            try:
                os.replace(tmp, directory)
            except OSError:
                os.replace(old, directory)  # the earlier checkpoint goes back in place
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except DiskFullError:
        raise DiskFullError(directory) from None  # not the hidden temporary's name
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer came first
            raise OutputWriteError(
                f"{directory} was written by another process while this one was writing it, so "
                "it was not replaced. Choose another output directory, or pass --overwrite."
            ) from None
        raise OutputWriteError(
            f"cannot write checkpoint {directory} ({error.strerror}). Check space and permissions."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def write_model_files(
    model: DeepLabV3, directory: str | Path, *, provenance: Mapping[str, Any] | None = None
) -> None:
    """Write ``model.safetensors`` then ``config.json`` into an existing (run) directory, each
    file through a temporary name and a rename, leaving every other file untouched."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_files(model, directory, provenance)


def _write_files(model: DeepLabV3, directory: Path, provenance: Mapping[str, Any] | None) -> None:
    from safetensors.torch import save_file

    document = checkpoint_config_dict(model, provenance)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if value.numel() and value.data_ptr() in seen:  # safetensors refuses shared storage
            value = value.clone()
        seen.add(value.data_ptr())
        tensors[key] = value
    metadata = {"format": "pt", METADATA_CONFIG_KEY: json.dumps(document)}
    with atomic_file(directory / WEIGHTS_NAME) as weights_tmp:
        save_file(tensors, str(weights_tmp), metadata=metadata)
    write_text_atomic(directory / CONFIG_NAME, json.dumps(document, indent=2) + "\n")


def read_checkpoint_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The :class:`ModelConfig` and provenance stored in ``directory/config.json``."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(
            f"{directory} has no {CONFIG_NAME}, so it is not a checkpoint directory. "
            "Pass a directory written by deeplabcli (`deeplab convert`), or run `deeplab models`."
        )
    document = read_json(path, ModelLoadError, "Re-create the checkpoint")
    return config_from_document(document, str(path))


def config_from_document(document: Any, where: str) -> tuple[ModelConfig, dict[str, Any]]:
    """Validate a parsed checkpoint ``config.json`` and build its :class:`ModelConfig`."""
    if not isinstance(document, dict) or not is_checkpoint_config(document):
        raise ModelLoadError(
            f"{where} is not a deeplabcli checkpoint config. "
            "Pass a checkpoint written by deeplabcli, or convert the model with `deeplab convert`."
        )
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelLoadError(
            f"{where} has checkpoint format version {version!r}, this deeplabcli reads up to "
            f"{FORMAT_VERSION}. Upgrade deeplabcli."
        )
    if not isinstance(document["model"], dict):
        raise ModelLoadError(
            f"{where}: model must be a table of model settings, not {show(document['model'])}. "
            "Re-create the checkpoint."
        )
    try:
        config = ModelConfig.from_dict(document["model"], where=where)
    except ConfigError as error:
        raise ModelLoadError(str(error)) from None
    if config.arch not in list_archs():
        raise ModelLoadError(
            f"{where} names the unknown architecture {config.arch!r}. Set its model arch to one "
            f"of {', '.join(list_archs())}, or upgrade deeplabcli if a newer version wrote it."
        )
    return config, dict(document.get("provenance") or {})


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> DeepLabV3:
    """Rebuild the model from ``directory/config.json`` and load ``model.safetensors``.

    Returns the model in eval mode on ``device`` with ``model.config`` and ``model.provenance``.
    Missing, unexpected or mis-shaped tensors raise :class:`ModelLoadError` listing them.
    """
    directory = Path(directory)
    config, provenance = read_checkpoint_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(
            f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}. Copy the weights file back "
            "or re-create the checkpoint."
        )
    state_dict = read_safetensors(weights)
    model = DeepLabV3(config, provenance=provenance)
    load_state_dict_strict(model, state_dict, where=str(directory))
    return model.to(device).eval()


def load_state_dict_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, where: str
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with one readable error line that lists
    missing, unexpected and mis-shaped tensors."""
    load_strict(
        model,
        state_dict,
        source=f"the weights in {where}",
        error=lambda problems: ModelLoadError(
            f"weights in {where} do not fit the model config: {problems}. "
            "The files belong to different models; re-create the checkpoint."
        ),
    )
