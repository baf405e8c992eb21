"""`deeplab bootstrap`: hard images duplicated in a split list, read from their masks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deeplabcli.cli import main
from deeplabcli.config import HARD_CLASSES, VOC_CLASSES
from deeplabcli.data import open_dataset
from deeplabcli.data.bootstrap import bootstrap_split
from deeplabcli.data.palette import voc_palette

#: image id → VOC classes drawn in its mask (besides background and a 255 border)
CONTENTS = {
    "2007_000001": ("bicycle",),
    "2007_000002": ("chair", "sofa"),
    "2007_000003": ("cat",),
    "2007_000004": (),
    "2007_000005": ("pottedplant", "person"),
    "2007_000006": ("sofa",),
}


def make_voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for image_id, names in CONTENTS.items():
        mask = np.zeros((24, 30), np.uint8)
        mask[0] = 255
        for i, name in enumerate(names):
            mask[4 + 6 * i : 9 + 6 * i, 5:20] = VOC_CLASSES.index(name)
        image = Image.fromarray(mask).convert("P")
        image.putpalette(voc_palette().reshape(-1).tolist())
        image.save(voc / "SegmentationClass" / f"{image_id}.png")
        Image.new("RGB", (30, 24)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("".join(f"{i}\n" for i in CONTENTS))
    return root / "VOCdevkit"


def run(*args: str):
    return CliRunner().invoke(main, ["bootstrap", *(str(a) for a in args)])


def listed(path: Path) -> list[str]:
    return path.read_text().split()


def test_default_hard_classes(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    result = run("--data-root", root)
    assert result.exit_code == 0, result.output
    output = root / "VOC2012" / "ImageSets" / "Segmentation" / "train_bootstrap.txt"
    assert result.stdout == f"{output}\n"
    assert listed(output) == [
        "2007_000001", "2007_000001",
        "2007_000002", "2007_000002",
        "2007_000003",
        "2007_000004",
        "2007_000005", "2007_000005",
        "2007_000006", "2007_000006",
    ]  # fmt: skip
    counts = {"bicycle": 1, "chair": 1, "diningtable": 0, "pottedplant": 1, "sofa": 2}
    assert tuple(counts) == HARD_CLASSES
    for name, count in [*counts.items(), ("any of them", 4)]:
        assert re.search(rf"{name}\W+{count}\W", result.stderr), result.stderr
    assert "6 entries → 10 (4 hard images × 2)." in " ".join(result.stderr.split())
    # the list plugs into training: by name and by path, with its duplicates
    assert len(open_dataset("voc", root, "train_bootstrap")) == 10
    assert len(open_dataset("voc", root, str(output))) == 10


def test_named_classes_copies_and_output(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    output = tmp_path / "lists" / "hard.txt"
    result = run("--data-root", root, "--classes", "sofa, chair", "--copies", "3", "-o", output)
    assert result.exit_code == 0, result.output
    assert listed(output) == [
        "2007_000001", *["2007_000002"] * 3, "2007_000003", "2007_000004", "2007_000005",
        *["2007_000006"] * 3,
    ]  # fmt: skip
    totals: list[int] = []
    steps: list[int] = []
    result = bootstrap_split(
        root, "train", ["sofa", "chair"], copies=3, output=output,
        on_total=totals.append, on_progress=steps.append,
    )  # fmt: skip
    assert totals == [6] and sum(steps) == 6  # the bar knows its length before it moves
    assert result.images_per_class == {"sofa": 2, "chair": 1}
    assert (result.hard_entries, result.original_length, result.new_length) == (2, 6, 10)


def test_unknown_classes_and_bad_outputs(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    result = run("--data-root", root, "--classes", "bicycle,table,plant")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: unknown class names: table, plant. Use names from: {', '.join(VOC_CLASSES)}."
    )
    split = root / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt"
    same = run("--data-root", root, "-o", split)
    assert same.stderr.splitlines()[-1] == (
        f"Error: {split} is the list being bootstrapped. Give another output with -o."
    )
    assert listed(split) == list(CONTENTS)  # untouched
    copies = run("--data-root", root, "--copies", "0")
    assert copies.exit_code == 2 and "Invalid value for '--copies'" in copies.stderr
    missing = run("--data-root", tmp_path / "nowhere")
    assert missing.stderr.splitlines()[-1].startswith(
        f"Error: data root {tmp_path / 'nowhere'} does not exist."
    )


def test_custom_folder_data_set(tmp_path: Path) -> None:
    from support.synthetic import make_shapes_folder

    root = make_shapes_folder(tmp_path / "shapes", {"train": 12}, size=32, seed=3)
    result = bootstrap_split(root, "train", ["triangle"], dataset="folder")
    assert result.output == root / "splits" / "train_bootstrap.txt"
    data = open_dataset("folder", root, "train")
    with_triangle = sum(3 in present for present in data.classes_present())
    assert 0 < with_triangle < 12
    assert result.images_per_class == {"triangle": with_triangle}
    assert result.new_length == 12 + with_triangle
    assert len(open_dataset("folder", root, "train_bootstrap")) == 12 + with_triangle
    with pytest.raises(
        Exception,
        match=r"unknown class names: chair\. Use names from: background, square, disc, triangle\.",
    ):
        bootstrap_split(root, "train", ["chair"], dataset="folder")


@pytest.mark.parametrize("below", ["hard.txt", "sub/hard.txt"])
def test_an_output_under_a_file_is_refused_before_any_mask_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, below: str
) -> None:
    root = make_voc(tmp_path)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    read: list[int] = []
    monkeypatch.setattr(type(open_dataset("voc", root, "train")), "classes_present",
                        lambda self, **_: read.append(1) or [])  # fmt: skip
    result = run("--data-root", root, "-o", blocker / below)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: cannot write to {blocker / below} (it is under the file {blocker}). "
        "Give another output with -o."
    )
    assert read == [] and blocker.read_text() == "mine"
