"""``train_state.pt``: everything a run needs to continue bit-exactly, in one atomic file.

The file is self-contained (it repeats the model weights next to ``model.safetensors``), so a
process killed between writing the two can never pair weights of one iteration with optimizer
state of another: resuming reads ``train_state.pt`` alone. It holds plain tensors and Python
scalars only and is read with ``torch.load(weights_only=True)``.

Random state: the data order and every augmentation are pure functions of the seed and the
position in the sample stream (:class:`~deeplabcli.data.dataset.SeededSampler`), so the
iteration count restores them. What remains random — dropout, through the global torch
generator — is saved per process (``rng``) together with Python's and NumPy's generators and,
on CUDA, every device's generator.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RunDirectoryError
from ..files import atomic_file

STATE_NAME = "train_state.pt"
STATE_VERSION = 1


@dataclass
class TrainState:
    """The resumable part of a run after ``iteration`` completed optimizer steps."""

    iteration: int  # completed iterations; the next step is ``iteration`` (0-based)
    data_position: int  # samples consumed from the stream so far (iteration × global batch)
    model: dict[str, torch.Tensor]  # state dict of the bare model (no DDP wrapper), on CPU
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None  # AMP GradScaler state (fp16 on CUDA), else None
    rng: list[dict[str, Any]]  # one entry per process (rank order), see capture_rng()
    log: list[dict[str, float]]  # per process: running sums of the current logging window
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **self.__dict__}


def capture_rng() -> dict[str, Any]:
    """This process's generators as tensors/ints (``weights_only``-loadable)."""
    version, key, gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(key, dtype=torch.int64), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_key.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, key, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in key.tolist()), gauss))
    np_name, np_key, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_key.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary sibling, flushed to disk, then renamed over ``path``."""
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def save_train_state(state: TrainState, directory: Path) -> Path:
    path = Path(directory) / STATE_NAME
    atomic_torch_save(state.to_dict(), path)
    return path


def load_train_state(directory: Path) -> TrainState:
    """Read ``directory/train_state.pt``; a missing or unreadable file is a
    :class:`RunDirectoryError` saying how to proceed."""
    path = Path(directory) / STATE_NAME
    if not path.is_file():
        raise RunDirectoryError(
            f"{directory} holds no training state ({STATE_NAME}) to resume. "
            "Start the run without --resume, or give the run directory with --out."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise RunDirectoryError(
            f"{path} cannot be read ({type(error).__name__}). Start the run again with --overwrite."
        ) from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise RunDirectoryError(
            f"{path} is not a training state this deeplabcli understands. "
            "Start the run again with --overwrite."
        )
    data.pop("version")
    data.pop("schedule", None)  # written until 0.1.0, never read: the LR policy is the config
    return TrainState(**data)
