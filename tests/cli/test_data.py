"""`deeplab data prepare-voc | convert-masks | check` through click's CliRunner."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support.data_builders import make_folder, make_voc, save_image, save_mask

from deeplabcli.cli import main
from deeplabcli.data.palette import colourise, voc_palette


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def test_prepare_voc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    voc = make_voc(tmp_path / "voc", {"train": ["2007_000001"], "val": ["2007_000002"]})
    for stale in (voc / "SegmentationClassAug").iterdir():
        stale.unlink()
    sbd = tmp_path / "sbd" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    scipy_io.savemat(
        str(sbd / "cls" / "2008_000001.mat"),
        {"GTcls": {"Segmentation": np.ones((24, 32), dtype=np.uint8)}},
    )
    save_image(voc / "JPEGImages" / "2008_000001.jpg", np.zeros((24, 32, 3)))
    (sbd / "train.txt").write_text("2008_000001\n")
    (sbd / "val.txt").write_text("2007_000002\n")
    result = run(
        "data", "prepare-voc", "--sbd", str(sbd), "--quiet", env={"DEEPLAB_DATA_ROOT": str(voc)}
    )
    assert result.exit_code == 0, result.output
    lists = voc / "ImageSets" / "Segmentation" / "trainaug.txt"
    assert result.stdout == (
        "SegmentationClassAug: 1 masks converted from SBD, 2 official VOC masks copied, "
        f"0 already present.\n{lists}: 2 ids.\n"
    )
    assert lists.read_text() == "2007_000001\n2008_000001\n"
    again = run("data", "prepare-voc", "--sbd", str(sbd), "--voc", str(voc))
    assert again.exit_code == 0 and "0 masks converted from SBD" in again.stdout
    assert "3 already present" in again.stdout and "masks" in again.stderr  # the progress bar

    monkeypatch.setitem(sys.modules, "scipy.io", None)
    (voc / "SegmentationClassAug" / "2008_000001.png").unlink()
    failed = run("data", "prepare-voc", "--sbd", str(sbd), "--voc", str(voc))
    assert failed.exit_code == 1
    assert failed.stderr == (
        "Error: reading the SBD release needs scipy, which is not installed. "
        'Install it from the deeplabcli checkout with pip install ".[sbd]" (pipx: pipx inject '
        'deeplabcli scipy; from PyPI once published: pip install "deeplabcli[sbd]").\n'
    )


def test_prepare_voc_bad_paths(tmp_path: Path) -> None:
    result = run("data", "prepare-voc", "--sbd", str(tmp_path / "x"), "--voc", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: SBD folder {tmp_path / 'x'} does not exist. Give --sbd as the unpacked "
        "benchmark_RELEASE (or its dataset/ folder).\n"
    )
    missing_voc = run("data", "prepare-voc", "--sbd", str(tmp_path))
    assert missing_voc.exit_code == 2 and "Missing option '--voc'" in missing_voc.stderr


def test_convert_masks(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [255, 2, 1]], dtype=np.uint8)
    save_image(tmp_path / "rgb" / "a.png", colourise(mask, voc_palette()))
    result = run("data", "convert-masks", str(tmp_path / "rgb"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote 1 class-index masks to {tmp_path / 'out'}.\n"
    with Image.open(tmp_path / "out" / "a.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), mask)

    (tmp_path / "classes.txt").write_text("bg 10 10 10\nroad #ff0000\n")
    own = np.full((2, 3, 3), 10, dtype=np.uint8)
    own[0, 0] = (255, 0, 0)
    save_image(tmp_path / "own" / "b.png", own)
    args = ["data", "convert-masks", str(tmp_path / "own"), "-o", str(tmp_path / "out2")]
    result = run(*args, "--classes", str(tmp_path / "classes.txt"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out2" / "b.png") as image:
        np.testing.assert_array_equal(np.array(image), [[1, 0, 0], [0, 0, 0]])
        assert image.getpalette()[:6] == [10, 10, 10, 255, 0, 0]

    save_image(tmp_path / "own" / "c.png", colourise(mask, voc_palette()))
    result = run(*args, "--overwrite")  # without the classes file those colours mean nothing
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {tmp_path / 'own' / 'b.png'} has colours that belong to no class: "
        "(10, 10, 10), (255, 0, 0). Give every class its colour in the classes file "
        "(e.g. 'cat 64 0 0').\n"
    )
    assert result.stdout == f"Wrote 1 class-index masks to {tmp_path / 'out2'}; 1 masks failed.\n"
    again = run(*args, "--classes", str(tmp_path / "classes.txt"))
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: 2 output masks already exist: {tmp_path / 'out2' / 'b.png'}, "
        f"{tmp_path / 'out2' / 'c.png'}. "
        "Pass --overwrite to replace them.\n"
    )


def test_check_reports_every_bad_file_and_fails(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ["a", "b", "c", "d"])
    save_mask(root / "masks" / "b.png", np.full((20, 30), 7, dtype=np.uint8), "L")
    save_image(root / "masks" / "d.png", np.zeros((20, 30, 3)))
    result = run("data", "check", "--dataset", "folder", "--data-root", str(root), "-q")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert (
        f"  b: {root / 'masks' / 'b.png'} has label values outside 0..2 and 255: 7. "
        "Fix the mask, or check that the data set has 3 classes."
    ) in lines
    assert any(
        line.startswith(f"  d: {root / 'masks' / 'd.png'} is an RGB colour mask") for line in lines
    )
    assert result.stdout == "2 of 4 images OK, 2 with problems.\n"
    report = json.loads(
        run("data", "check", "--dataset", "folder", "--data-root", str(root), "--json").stdout
    )
    assert report["images"] == 4 and [p["id"] for p in report["problems"]] == ["b", "d"]
    assert report["images_per_class"]["background"] == 2


def test_check_errors_and_real_data(tmp_path: Path, voc_root: Path) -> None:
    missing = run("data", "check", "--data-root", str(tmp_path / "nope"))
    assert missing.exit_code == 1
    assert missing.stderr == (
        f"Error: data root {tmp_path / 'nope'} does not exist. Give --data-root (or "
        "DEEPLAB_DATA_ROOT) as .../VOCdevkit or .../VOCdevkit/VOC2012.\n"
    )
    no_root = run("data", "check")
    assert no_root.stderr == (
        "Error: no data root given. Pass --data-root or set DEEPLAB_DATA_ROOT to the data set "
        "folder.\n"
    )
    real = run("data", "check", "--data-root", str(voc_root.parent), "--split", "val", "--json")
    assert real.exit_code == 0, real.output
    report = json.loads(real.stdout)
    assert report["images"] == 120 and report["problems"] == []
    assert report["images_per_class"]["aeroplane"] == 0 and report["images_per_class"]["dog"] > 0


def test_convert_masks_reports_an_unwritable_output_and_goes_on(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    save_image(tmp_path / "rgb" / "a.png", colourise(mask, voc_palette()))
    save_image(tmp_path / "rgb" / "sub" / "b.png", colourise(mask, voc_palette()))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where a folder should be")
    result = run("data", "convert-masks", str(tmp_path / "rgb"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    [error] = result.stderr.splitlines()
    assert error.startswith(f"Error: cannot write {tmp_path / 'out' / 'sub' / 'b.png'} (")
    assert error.endswith("). Choose a writable --output folder.")
    assert result.stdout == f"Wrote 1 class-index masks to {tmp_path / 'out'}; 1 masks failed.\n"
    with Image.open(tmp_path / "out" / "a.png") as image:
        np.testing.assert_array_equal(np.array(image), mask)


def test_prepare_voc_into_an_unwritable_place_is_one_error_line(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "voc", {"train": ["2007_000001"], "val": ["2007_000002"]})
    aug = voc / "SegmentationClassAug"
    for stale in aug.iterdir():
        stale.unlink()
    aug.rmdir()
    aug.write_text("a file where the folder should be")
    sbd = tmp_path / "sbd" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("2007_000001\n")
    (sbd / "val.txt").write_text("2007_000002\n")
    result = run("data", "prepare-voc", "--sbd", str(sbd), "--voc", str(voc), "--quiet")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {aug}: File exists. Check that the VOC folder is writable and the SBD files "
        "are readable.\n"
    )


def test_check_reports_every_problem_of_the_split_grouped_and_its_fix_runs(
    tmp_path: Path,
) -> None:
    """Missing files do not stop the check: every problem of the split is listed under its
    kind with a count, ids listed twice are noted, nothing in the data set is touched, and the
    convert-masks command a colour mask suggests runs as given."""
    from support.hashes import tree_hashes

    root = make_folder(tmp_path / "ds", ["a", "b", "c", "d", "e", "f", "g"])
    masks = root / "masks"
    (masks / "c.png").unlink()  # missing mask
    (root / "images" / "g.png").unlink()  # missing image
    save_mask(masks / "b.png", np.full((20, 30), 7, dtype=np.uint8), "L")  # label 7 of 3 classes
    colours = np.zeros((20, 30, 3), dtype=np.uint8)  # background (0, 0, 0) ...
    colours[5:10, 5:10] = (64, 0, 0)  # ... a cat and a dog, in the classes file's colours
    colours[12:18, 20:28] = (0, 255, 0)
    save_image(masks / "d.png", colours)
    save_mask(masks / "e.png", np.zeros((10, 30), dtype=np.uint8), "L")  # image is 30×20
    (root / "splits").mkdir()
    (root / "splits" / "x.txt").write_text("a\nb\nc\nd\ne\nf\ng\na\nf\nf\n")
    before = tree_hashes(root)
    result = run("data", "check", "--dataset", "folder", "--data-root", str(root), "--split",
                 "x", "-q")  # fmt: skip
    assert result.exit_code == 1
    assert tree_hashes(root) == before
    lines = result.stderr.splitlines()
    command = (
        f"deeplab data convert-masks {masks} -o {root / 'masks_index'} --classes "
        f"{root / 'classes.txt'}"
    )
    assert lines[lines.index("missing images (1):") :] == [
        "missing images (1):",
        f"  g: {root / 'images' / 'g.jpg'} does not exist. Add the file or drop 'g' from the "
        "split list.",
        "missing masks (1):",
        f"  c: {masks / 'c.png'} does not exist. Add the file or drop 'c' from the split list.",
        "masks that are not class-index images (e.g. RGB colour masks) (1):",
        f"  d: {masks / 'd.png'} is an RGB colour mask, not a class-index mask. Convert the "
        f"colour masks with `{command}` (class colours → class indices) and use the converted "
        f"masks in place of {masks}, or save masks as palette (P) or grayscale (L) PNGs of class "
        "indices.",
        "masks with label values out of range (1):",
        f"  b: {masks / 'b.png'} has label values outside 0..2 and 255: 7. Fix the mask, or "
        "check that the data set has 3 classes.",
        "images and masks of different sizes (1):",
        f"  e: image and mask sizes differ for 'e': {root / 'images' / 'e.png'} is 30x20, "
        f"{masks / 'e.png'} is 30x10. Give every mask its image's exact size.",
        "Note: 2 ids are listed more than once: a (2×), f (3×). Training sees them that often "
        "(as a bootstrapped list intends); `deeplab eval` refuses such a split.",
    ]
    assert result.stdout == "2 of 7 images OK, 5 with problems.\n"

    report = json.loads(run("data", "check", "--dataset", "folder", "--data-root", str(root),
                            "--split", "x", "--json").stdout)  # fmt: skip
    assert report["images"] == 7
    assert report["problem_counts"] == {"missing_image": 1, "missing_mask": 1,
                                        "not_index_mask": 1, "label_values": 1,
                                        "size_mismatch": 1}  # fmt: skip
    assert report["duplicates"] == {"a": 2, "f": 3}
    assert [(p["id"], p["kind"]) for p in report["problems"]][:2] == [
        ("b", "label_values"), ("c", "missing_mask"),
    ]  # fmt: skip

    # the suggested command, exactly as printed
    words = shlex.split(command)
    assert words[:3] == ["deeplab", "data", "convert-masks"]
    converted = run(*words[1:])
    assert converted.exit_code == 0, converted.output
    assert tree_hashes(root).items() >= before.items()  # the originals are all still there
    with Image.open(root / "masks_index" / "d.png") as image:
        expected = np.zeros((20, 30), dtype=np.uint8)
        expected[5:10, 5:10], expected[12:18, 20:28] = 1, 2
        np.testing.assert_array_equal(np.array(image), expected)


def test_check_of_a_voc_split_with_a_missing_image(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "voc", {"val": ["2007_000001", "2007_000002"]})
    (voc / "JPEGImages" / "2007_000002.jpg").unlink()
    result = run("data", "check", "--data-root", str(voc), "-q")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-2:] == [
        "missing images (1):",
        f"  2007_000002: {voc / 'JPEGImages' / '2007_000002.jpg'} does not exist. Add the file "
        "or drop '2007_000002' from the split list.",
    ]
    assert result.stdout == "1 of 2 images OK, 1 with problems.\n"


def test_convert_masks_of_one_file(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [255, 2, 1]], dtype=np.uint8)
    source = save_image(tmp_path / "rgb" / "a.png", colourise(mask, voc_palette()))
    save_image(tmp_path / "rgb" / "other.png", colourise(mask, voc_palette()))
    result = run("data", "convert-masks", str(source), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote 1 class-index masks to {tmp_path / 'out'}.\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
    with Image.open(tmp_path / "out" / "a.png") as image:
        np.testing.assert_array_equal(np.array(image), mask)
    missing = run("data", "convert-masks", str(tmp_path / "nope"), "-o", str(tmp_path / "o2"))
    assert (missing.exit_code, missing.stderr) == (1, (
        f"Error: {tmp_path / 'nope'} does not exist. Give a folder of mask images or one mask "
        "file.\n"
    ))  # fmt: skip


@pytest.mark.parametrize("kind", ["voc", "folder"])
def test_a_data_root_that_is_a_file_says_so(tmp_path: Path, kind: str) -> None:
    photo = save_image(tmp_path / "good.jpg", np.zeros((4, 4, 3)))
    result = run("data", "check", "--dataset", kind, "--data-root", str(photo))
    hint = {
        "voc": ".../VOCdevkit or .../VOCdevkit/VOC2012.",
        "folder": "the folder that holds images/, masks/ and classes.txt.",
    }[kind]
    assert (result.exit_code, result.stderr) == (1, (
        f"Error: data root {photo} is a file, not a folder. Give --data-root (or "
        f"DEEPLAB_DATA_ROOT) as {hint}\n"
    ))  # fmt: skip
