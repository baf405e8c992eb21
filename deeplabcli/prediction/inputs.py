"""Which images ``deeplab predict`` reads, and where the mask of each one goes.

Inputs are image files, folders (searched recursively for image suffixes) and glob patterns.
Outputs: with one input file, ``-o mask.png`` names the mask itself; otherwise ``-o`` is a folder
that mirrors each image's path relative to the folder (or glob base) it was found in, with a
``.png`` suffix; without ``-o`` each mask is ``<stem>_mask.png`` next to its image. A mask path
that is one of the inputs (the same file by any name: links, ``..``) is never written, with
``--overwrite`` or without: that input fails with a line saying why.
"""

from __future__ import annotations

import glob
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..files import IMAGE_SUFFIXES, file_identity, is_image_name

MASK_SUFFIX = "_mask.png"  # outputs written next to their inputs (no -o)


@dataclass(frozen=True)
class Job:
    """One image to segment and the path of its mask."""

    source: Path
    output: Path


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard (``data/**/*.jpg`` → ``data``)."""
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, part in enumerate(parts) if is_glob(part))]
    return Path(*fixed) if fixed else Path(".")


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _special_kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def expand_inputs(
    inputs: Sequence[str], *, exclude: Path | None = None, skip_masks: bool = False
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Every image named by ``inputs``: ``(file, path relative to its folder or glob base)``,
    in a deterministic order, each file once; and ``(input, message)`` for inputs that name
    nothing usable. Folder and glob results skip files inside ``exclude`` (the output folder)
    and, with ``skip_masks``, earlier ``*_mask.png`` outputs; explicitly named files are kept.
    """
    found: list[tuple[Path, Path]] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def wanted(path: Path) -> bool:
        return not _inside(path, exclude) and not (skip_masks and path.name.endswith(MASK_SUFFIX))

    for text in inputs:
        path = Path(text)
        if path.is_file():
            entries = [(path, Path(path.name))]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if is_image_name(p) and p.is_file())
            entries = [(p, p.relative_to(path)) for p in files if wanted(p)]
            if not entries:
                failures.append(
                    (text, f"{text}: no images in this folder. Give a folder of image files "
                     "(.jpg, .png, .bmp, .tif, .webp, ...).")
                )  # fmt: skip
                continue
        elif is_glob(text):
            base = _glob_base(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and wanted(m)]
            for folder in (m for m in matches if m.is_dir()):
                files += sorted(
                    p for p in folder.rglob("*") if is_image_name(p) and p.is_file() and wanted(p)
                )
            entries = [
                (p, p.relative_to(base) if p.is_relative_to(base) else Path(p.name)) for p in files
            ]
            if not entries:
                failures.append((text, f"{text}: no files match this pattern. Check the pattern."))
                continue
        elif path.exists():  # a named pipe, device or socket
            failures.append(
                (text, f"{text}: {_special_kind(path)}, not an image file. Save the image to a "
                 "file and give that.")
            )  # fmt: skip
            continue
        else:
            failures.append((text, f"{text}: no such file or directory. Check the path."))
            continue
        for source, relative in entries:
            key = source.resolve()
            if key not in seen:
                seen.add(key)
                found.append((source, relative))
    return found, failures


def plan_outputs(
    inputs: Sequence[str], output: str | None, suffix: str = ".png"
) -> tuple[list[Job], list[tuple[str, str]]]:
    """One :class:`Job` per input image, and ``(input, message)`` for each input that cannot be
    processed (nothing found, or a mask path shared with another input or naming an input).
    Outputs end in ``suffix`` (``.npz`` for probability maps; ``<stem>_mask.npz`` without -o).

    Raises :class:`ConfigError` when ``output`` is a file name but several images are given.
    """
    target = Path(output) if output is not None else None
    # one named input that is not a folder or pattern (expand_inputs says what is wrong with
    # one that is missing, or a named pipe)
    single_file = len(inputs) == 1 and not is_glob(inputs[0]) and not Path(inputs[0]).is_dir()
    as_file = (
        target is not None
        and target.suffix.lower() in IMAGE_SUFFIXES | {suffix}
        and not target.is_dir()
    )
    if as_file and target.suffix.lower() != suffix:  # type: ignore[union-attr]
        what = "masks are PNG files" if suffix == ".png" else f"probabilities are {suffix} files"
        wrong = target.suffix  # type: ignore[union-attr]
        raise ConfigError(f"{what}, not {wrong}. Give -o a {suffix} name or a folder.")
    if as_file and not single_file:
        raise ConfigError(
            f"-o {output} names one file but the inputs are several images, a folder or a "
            "pattern. Give -o a folder."
        )
    exclude = target.resolve() if target is not None and not as_file else None
    found, failures = expand_inputs(inputs, exclude=exclude, skip_masks=target is None)
    jobs: list[Job] = []
    owners: dict[Path, Path] = {}
    inputs_by_identity = {file_identity(source): source for source, _ in found}
    for source, relative in found:
        if target is None:
            out = source.with_name(source.stem + MASK_SUFFIX.removesuffix(".png") + suffix)
        elif as_file:
            out = target
        else:
            out = target / relative.with_suffix(suffix)
        key = out.resolve()
        other = inputs_by_identity.get(file_identity(out)) if out.exists() else None
        if key == source.resolve() or other == source:
            failures.append(
                (str(source), f"{source}: its mask would replace the image itself. "
                 "Choose another output location with -o.")
            )  # fmt: skip
        elif other is not None:
            failures.append(
                (str(source), f"{source}: its mask {out} would replace the input {other}, "
                 "which is never overwritten. Choose another output location with -o.")
            )  # fmt: skip
        elif key in owners:
            failures.append(
                (str(source), f"{source}: its mask {out} is also the mask of {owners[key]}. "
                 "Predict these images into separate folders.")
            )  # fmt: skip
        else:
            owners[key] = source
            jobs.append(Job(source, out))
    return jobs, failures
