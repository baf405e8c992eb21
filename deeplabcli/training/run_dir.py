"""The run directory: a checkpoint directory plus the files that make a run resumable.

::

    RUN/
        config.json, model.safetensors   the checkpoint (deeplabcli.weights.checkpoint), loadable as is
        train_config.json                the TrainConfig of the run (what --resume continues)
        train_state.pt                   optimizer, RNG, iteration, ... (engine.train_state)
        metrics.jsonl                    one JSON record per line: training and validation
        tensorboard/                     TensorBoard scalars, when tensorboard is installed

A directory holding another run is refused unless the run is resumed or ``overwrite`` is set;
a non-empty directory that holds no run is never written into. A run that saved no state yet
(stopped between ``train_config.json`` and the first ``train_state.pt``) may simply be started
again. One process writes a run directory at a time: :func:`lock_run_dir` holds ``.train.lock``
(its PID inside) for the whole run, and the writer removes the temporaries a killed run left.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..config import TRAIN_RUNTIME_FIELDS, TrainConfig
from ..errors import RunDirectoryError
from ..files import (
    disk_full_as_error,
    exclusive_lock,
    read_json,
    stale_temporaries,
    write_text_atomic,
)
from ..weights.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from .state import STATE_NAME

RUN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RUN_FILES = (CONFIG_NAME, WEIGHTS_NAME, RUN_CONFIG_NAME, STATE_NAME, METRICS_NAME)
#: held (fcntl.flock) by the one process writing the run directory; it holds that PID
LOCK_NAME = ".train.lock"
#: metrics.jsonl fields that measure time: they differ between runs of identical maths
TIMING_FIELDS = ("it_per_s", "elapsed_s")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_run_config(directory: str | os.PathLike[str]) -> TrainConfig:
    """The TrainConfig stored in a run directory (for ``--resume`` without repeating options)."""
    path = Path(directory).expanduser() / RUN_CONFIG_NAME
    if not path.is_file():
        raise RunDirectoryError(
            f"{directory} holds no training run ({RUN_CONFIG_NAME} is missing). "
            "Give the run directory with --out, or start the run without --resume."
        )
    data = read_json(path, RunDirectoryError, "Start again with --overwrite")
    return TrainConfig.from_dict(data, where=str(path))


def differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """``field given (saved: value)`` for every run-defining field that differs."""
    a, b = saved.to_dict(), given.to_dict()
    return [
        f"{key} {b[key]!r} (saved: {a[key]!r})"
        for key in a
        if key not in TRAIN_RUNTIME_FIELDS and a[key] != b[key]
    ]


def check_run_dir(config: TrainConfig) -> Path:
    """Check ``config.out`` against ``resume``/``overwrite`` without writing; returns it.

    New run: the directory must be absent or empty, or hold a run and ``overwrite`` be set.
    Resume: it must hold a run whose settings equal ``config`` apart from
    :data:`~deeplabcli.config.TRAIN_RUNTIME_FIELDS`.
    """
    out = Path(config.out).expanduser()
    if config.resume:
        saved = read_run_config(out)
        changed = differences(saved, config)
        if changed:
            raise RunDirectoryError(
                f"{out} holds a run with other settings: {'; '.join(changed)}. Resume with the "
                "saved settings (leave those options out), or start a new run in another --out."
            )
        return out
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"{out} exists and is not a directory. Choose another --out.")
    started = (out / RUN_CONFIG_NAME).is_file()
    if started and (out / STATE_NAME).is_file() and not config.overwrite:
        raise RunDirectoryError(
            f"{out} already holds a training run. Pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out."
        )
    ours = {LOCK_NAME, *(p.name for p in stale_temporaries(out, RUN_FILES))}
    if not started and out.is_dir() and any(p.name not in ours for p in out.iterdir()):
        raise RunDirectoryError(
            f"{out} is not empty and holds no training run. Choose a new or empty --out."
        )
    return out


def lock_run_dir(out: Path) -> AbstractContextManager[None]:
    """Hold the run directory ``out`` (created if missing) for this process until the block
    ends; another process holding it raises :class:`RunDirectoryError` naming its PID."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    def busy(pid: int | None) -> RunDirectoryError:
        holder = f"process {pid}" if pid is not None else "a process whose PID cannot be read"
        return RunDirectoryError(
            f"{out} is in use by another training run ({holder}). Wait for it to finish, or "
            "choose another --out."
        )

    return exclusive_lock(out / LOCK_NAME, busy)


def state_stamp(out: Path) -> tuple[int, int, int] | None:
    """Inode, size and modification time of ``out/train_state.pt`` (None when absent): every
    save changes it."""
    try:
        status = (Path(out).expanduser() / STATE_NAME).stat()
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


@contextmanager
def claim_run_dir(config: TrainConfig, stamp: tuple[int, int, int] | None) -> Iterator[Path]:
    """Hold ``config.out`` (:func:`lock_run_dir`) for the block, once it is checked again under
    the lock (a run that ended while this one was being set up; for a resumed run, a state
    other than the ``stamp`` read), with the temporaries a killed save left removed."""
    with lock_run_dir(Path(config.out)):
        out = check_run_dir(config)
        if config.resume and state_stamp(out) != stamp:
            raise RunDirectoryError(
                f"{out} was saved by another process while this one was starting. "
                "Run the command again."
            )
        remove_stale_temporaries(out)
        yield out


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the hidden temporaries (``.train_state.pt.1a2b3c4d.tmp``...) that a run killed
    while saving left in ``out``; only the holder of :func:`lock_run_dir` may call this."""
    stale = [p for p in stale_temporaries(Path(out).expanduser(), RUN_FILES) if not p.is_dir()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def start_run_dir(config: TrainConfig) -> Path:
    """Make ``config.out`` ready for a new run (after :func:`check_run_dir`): the files of a run
    being overwritten, or of one that saved no state, are deleted (nothing else), and
    ``train_config.json`` is written."""
    out = Path(config.out).expanduser()
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / RUN_CONFIG_NAME, config.replace(resume=False, overwrite=False).to_dict()
    )
    return out


class MetricsLog:
    """``metrics.jsonl``: append-only records with an ``iteration`` field."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / METRICS_NAME

    def append(self, record: dict[str, Any]) -> None:
        with disk_full_as_error(self.path), open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record (a line cut short by a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate(self, iteration: int) -> None:
        """Keep only records up to ``iteration`` (those written after the checkpoint a run
        resumes from are written again), atomically."""
        kept = [r for r in self.records() if r.get("iteration", 0) <= iteration]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def without_timing(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with the timing fields removed (what two identical runs share exactly)."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def tensorboard_writer(directory: Path, start: int) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``RUN/tensorboard`` (events from ``start`` on are
    purged, so a resumed run does not repeat steps), or None without the optional extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pip install "deeplabcli[tensorboard]"
        return None
    return SummaryWriter(str(Path(directory) / TENSORBOARD_DIR), purge_step=start)


def write_scalars(writer: Any, step: int, values: dict[str, float]) -> None:
    if writer is not None:
        for key, value in values.items():
            writer.add_scalar(key, value, step)
