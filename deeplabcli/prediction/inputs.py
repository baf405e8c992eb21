"""Which images ``deeplab predict`` reads, and where the mask of each one goes.

Inputs are image files, folders (searched recursively for image suffixes) and glob patterns.
Outputs: with one input file, ``-o mask.png`` names the mask itself; otherwise ``-o`` is a folder
that mirrors each image's path relative to the folder (or glob base) it was found in, with a
``.png`` suffix; without ``-o`` each mask is ``<stem>_mask.png`` next to its image.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..files import IMAGE_SUFFIXES, is_image_name

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
    inputs: Sequence[str], output: str | None
) -> tuple[list[Job], list[tuple[str, str]]]:
    """One :class:`Job` per input image, and ``(input, message)`` for each input that cannot be
    processed (nothing found, or a mask path shared with another input or equal to the image).

    Raises :class:`ConfigError` when ``output`` is a file name but several images are given.
    """
    target = Path(output) if output is not None else None
    single_file = len(inputs) == 1 and Path(inputs[0]).is_file()
    as_file = target is not None and target.suffix.lower() in IMAGE_SUFFIXES and not target.is_dir()
    if as_file and target.suffix.lower() != ".png":  # type: ignore[union-attr]
        raise ConfigError(
            f"masks are PNG files, not {target.suffix}. Give -o a .png name or a folder."
        )  # type: ignore[union-attr]
    if as_file and not single_file:
        raise ConfigError(
            f"-o {output} names one file but the inputs are several images, a folder or a "
            "pattern. Give -o a folder."
        )
    exclude = target.resolve() if target is not None and not as_file else None
    found, failures = expand_inputs(inputs, exclude=exclude, skip_masks=target is None)
    jobs: list[Job] = []
    owners: dict[Path, Path] = {}
    for source, relative in found:
        if target is None:
            out = source.with_name(source.stem + MASK_SUFFIX)
        elif as_file:
            out = target
        else:
            out = target / relative.with_suffix(".png")
        key = out.resolve()
        if key == source.resolve():
            failures.append(
                (str(source), f"{source}: its mask would replace the image itself. "
                 "Choose another output location with -o.")
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
