"""``deeplab data``: prepare VOC trainaug from SBD, convert colour masks, check a data set."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from ..config.constants import default_workers
from ..data import DATA_ROOT_ENV, DATASET_KINDS

FOLDER_LAYOUT = """\b
Custom data sets (--dataset folder) use this layout:
  ROOT/classes.txt        one class per line, index order: "name", "name R G B" or "name #RRGGBB"
  ROOT/images/<stem>.jpg  (or .png, .bmp, ...; sub-folders allowed)
  ROOT/masks/<stem>.png   class indices (mode P or L), 255 = ignore
  ROOT/splits/<name>.txt  optional lists of stems; the split "all" is every image
"""


@click.group(help=f"Prepare and check data sets.\n\n{FOLDER_LAYOUT}")
def data() -> None:
    pass


@data.command("prepare-voc")
@click.option(
    "--sbd",
    "sbd",
    required=True,
    type=click.Path(path_type=Path),
    help="The unpacked SBD release (benchmark_RELEASE or its dataset/ folder).",
)
@click.option(
    "--voc",
    "voc",
    required=True,
    envvar=DATA_ROOT_ENV,
    type=click.Path(path_type=Path),
    help=f"VOCdevkit or VOCdevkit/VOC2012 (default: ${DATA_ROOT_ENV}).",
)
@click.option("--overwrite", is_flag=True, help="Rewrite masks that already exist.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def prepare_voc_command(sbd: Path, voc: Path, overwrite: bool, quiet: bool) -> None:
    """Write SegmentationClassAug and trainaug.txt (SBD train+val + VOC train − VOC val).

    Needs scipy: pip install ".[sbd]" in the deeplabcli checkout, or pipx inject deeplabcli
    scipy. Safe to re-run: finished masks are kept.
    """
    from ..data.sbd import prepare_voc
    from ..progress import progress_bar

    with ExitStack() as stack:
        bar: list[Any] = []

        def start(total: int) -> None:
            bar.append(stack.enter_context(progress_bar(total, "masks", disable=quiet)))

        summary = prepare_voc(
            sbd,
            voc,
            overwrite=overwrite,
            on_start=start,
            on_progress=lambda n: bar[0].advance(n),
        )
    click.echo(
        f"SegmentationClassAug: {summary.from_sbd} masks converted from SBD, "
        f"{summary.from_voc} official VOC masks copied, {summary.skipped} already present."
    )
    if summary.images_copied:
        click.echo(f"JPEGImages: {summary.images_copied} images copied from SBD.")
    click.echo(f"{summary.list_path}: {summary.trainaug_ids} ids.")


@data.command("convert-masks")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the class-index PNGs (same relative paths).",
)
@click.option(
    "--classes",
    "classes_file",
    type=click.Path(path_type=Path),
    help="Classes file with colours ('cat 64 0 0'); default: the VOC palette.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output masks.")
def convert_masks_command(
    source: Path, output: Path, classes_file: Path | None, overwrite: bool
) -> None:
    """Turn colour (RGB) masks (a folder of them, or one file) into palette PNGs of class indices.

    Each colour maps to the class with that colour (VOC's palette, or the colours in
    --classes); the VOC void colour (224, 224, 192) becomes 255 (ignore).
    """
    from ..data.folder import class_palette, read_classes_file
    from ..data.masks import convert_colour_masks
    from ..data.palette import voc_palette

    if classes_file is not None:
        specs = read_classes_file(classes_file)
        palette = class_palette(specs)
        colours = palette[: len(specs)]
    else:
        palette = voc_palette()
        colours = palette[:21]
    written, failed = convert_colour_masks(source, output, colours, palette, overwrite=overwrite)
    for _, problem in failed:
        click.echo(f"Error: {problem}", err=True)
    click.echo(
        f"Wrote {len(written)} class-index masks to {output}"
        + (f"; {len(failed)} masks failed." if failed else ".")
    )
    if failed:
        click.get_current_context().exit(1)


@data.command("check")
@click.option(
    "--dataset", "kind", type=click.Choice(DATASET_KINDS), default="voc", show_default=True
)
@click.option(
    "--data-root",
    envvar=DATA_ROOT_ENV,
    type=click.Path(path_type=Path),
    help=f"Data set folder (default: ${DATA_ROOT_ENV}).",
)
@click.option("--split", default=None, help="Split name or list file [default: val / all].")
@click.option(
    "--workers",
    default=default_workers,
    show_default="the CPUs available, at most 4",
    type=click.IntRange(1, 64),
    help="Threads reading the images and masks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def check_command(
    kind: str, data_root: Path | None, split: str | None, workers: int, as_json: bool, quiet: bool
) -> None:
    """Read every image and mask of a split and report all problems, grouped by kind (exit 1
    if any): missing files, unreadable files, colour masks, label values out of range, size
    mismatches. Ids the split lists more than once are noted."""
    from ..data import open_dataset
    from ..data.check import PROBLEM_KINDS, check_dataset, distinct_samples
    from ..progress import print_table, progress_bar

    split = split or ("val" if kind == "voc" else "all")
    dataset = open_dataset(kind, data_root, split, check_files=False)
    total = len(distinct_samples(dataset))
    with progress_bar(total, "checking", disable=quiet or as_json, unit="img") as bar:
        report = check_dataset(dataset, workers=workers, on_progress=bar.advance)
    groups = report.grouped()
    if as_json:
        payload = {
            "images": report.images,
            "problems": [{"id": p.id, "kind": p.kind, "error": p.message} for p in report.problems],
            "problem_counts": {kind: len(found) for kind, found in groups.items()},
            "duplicates": report.duplicates,
            "images_per_class": dict(
                zip(dataset.class_names, report.images_per_class, strict=True)
            ),
            "ignored_pixels": report.ignored_pixels,
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        rows = [
            (name, images, pixels)
            for name, images, pixels in zip(
                dataset.class_names, report.images_per_class, report.pixels_per_class, strict=True
            )
        ]
        print_table(
            f"{dataset.name} {split}: {report.images} images",
            ["class", "images", "pixels"],
            rows,
            justify=["left", "right", "right"],
        )
        for kind, found in groups.items():
            click.echo(f"{PROBLEM_KINDS[kind]} ({len(found)}):", err=True)
            for problem in found:
                click.echo(f"  {problem.id}: {problem.message}", err=True)
        if report.duplicates:
            listed = ", ".join(f"{i} ({n}×)" for i, n in report.duplicates.items())
            click.echo(
                f"Note: {len(report.duplicates)} ids are listed more than once: {listed}. "
                "Training sees them that often (as a bootstrapped list intends); "
                "`deeplab eval` refuses such a split.",
                err=True,
            )
        bad = report.images_with_problems
        click.echo(
            f"{report.images - bad} of {report.images} images OK"
            + (f", {bad} with problems." if bad else ".")
        )
    if report.problems:
        click.get_current_context().exit(1)
