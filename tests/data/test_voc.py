"""PASCAL VOC 2012 layout: data roots, splits, label folders, eager and per-file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.data_builders import make_voc, save_image, save_mask

from deeplabcli.config import VOC_CLASSES
from deeplabcli.data import open_dataset
from deeplabcli.data.voc import VOCSegmentation
from deeplabcli.errors import ConfigError, DatasetError, LabelValueError, SizeMismatchError

SPLITS = {"train": ["2007_000001", "2007_000002"], "val": ["2008_000001"]}


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return make_voc(tmp_path, SPLITS, aug_only=["2009_000001"])


def test_data_root_may_be_devkit_voc2012_or_above(voc: Path) -> None:
    for root in (voc, voc.parent, voc.parent.parent):
        dataset = VOCSegmentation(root, "train")
        assert dataset.root == voc
        assert dataset.ids == SPLITS["train"]
    assert dataset.class_names == VOC_CLASSES and dataset.num_classes == 21


def test_official_and_trainaug_label_folders(voc: Path) -> None:
    val = VOCSegmentation(voc, "val")
    assert val.labels == "official"
    assert val.mask_paths == [voc / "SegmentationClass" / "2008_000001.png"]
    assert val.image_paths == [voc / "JPEGImages" / "2008_000001.jpg"]
    (voc / "ImageSets/Segmentation/trainaug.txt").write_text("2007_000001\n2009_000001\n")
    aug = VOCSegmentation(voc, "trainaug")
    assert aug.labels == "aug"
    assert aug.mask_paths[1] == voc / "SegmentationClassAug" / "2009_000001.png"
    sample = aug.load(0)
    assert 255 not in sample.mask  # the Aug masks of the builder have no border


def test_any_list_file_and_auto_labels(voc: Path, tmp_path: Path) -> None:
    official_only = tmp_path / "mine.txt"
    official_only.write_text("# comment\n2008_000001\n\n2007_000002  \n2008_000001\n")
    dataset = VOCSegmentation(voc, str(official_only))
    assert dataset.ids == ["2008_000001", "2007_000002", "2008_000001"]  # order, duplicates
    assert dataset.labels == "official"
    needs_aug = tmp_path / "boot.txt"  # DeepLab-style lines: image path, label path
    needs_aug.write_text(
        "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png\n"
        "/JPEGImages/2009_000001.jpg /SegmentationClassAug/2009_000001.png\n"
    )
    dataset = VOCSegmentation(voc, str(needs_aug))
    assert dataset.ids == ["2007_000001", "2009_000001"] and dataset.labels == "aug"
    assert VOCSegmentation(voc, str(official_only), labels="aug").labels == "aug"


def test_samples_for_evaluation_keep_size_and_paths(voc: Path) -> None:
    sample = VOCSegmentation(voc, "val").load(0)
    assert sample.id == "2008_000001" and sample.index == 0
    assert sample.image.shape == (24, 32, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (24, 32) and sample.mask.dtype == np.uint8
    with Image.open(sample.mask_path) as image:
        np.testing.assert_array_equal(sample.mask, np.array(image))


def test_missing_root_and_not_voc(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(tmp_path / "nope", "val")
    assert str(error.value) == (
        f"data root {tmp_path / 'nope'} does not exist. Give --data-root (or "
        "DEEPLAB_DATA_ROOT) as .../VOCdevkit or .../VOCdevkit/VOC2012."
    )
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(tmp_path, "val")
    assert str(error.value) == (
        f"{tmp_path} is not a PASCAL VOC 2012 folder (no JPEGImages or VOC2012/JPEGImages "
        "inside). Give --data-root as .../VOCdevkit or .../VOCdevkit/VOC2012."
    )


def test_missing_split_lists_the_available_ones(voc: Path) -> None:
    sets = voc / "ImageSets" / "Segmentation"
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(voc, "tarin")
    assert str(error.value) == (
        f"split 'tarin' not found: {sets / 'tarin.txt'} does not exist. Use one of: train, "
        "val, or give the path of a list file."
    )
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(voc, "trainaug")
    assert str(error.value) == (
        f"split 'trainaug' not found: {sets / 'trainaug.txt'} does not exist. Create the "
        f"trainaug labels and list with `deeplab data prepare-voc --sbd PATH --voc {voc}`."
    )
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(voc, "lists/x.txt")
    assert str(error.value) == "split list lists/x.txt does not exist. Give an existing list file."


def test_empty_split(voc: Path) -> None:
    path = voc / "ImageSets" / "Segmentation" / "empty.txt"
    path.write_text("\n# nothing\n")
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(voc, "empty")
    assert str(error.value) == (
        f"split 'empty' ({path}) lists no images. Add image ids to it, one per line."
    )


def test_missing_files_are_listed_with_a_count(voc: Path) -> None:
    ids = [f"2010_00000{i}" for i in range(7)]
    (voc / "ImageSets" / "Segmentation" / "ghost.txt").write_text("\n".join(ids))
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(voc, "ghost", labels="official")
    shown = ", ".join([str(voc / "JPEGImages" / f"{i}.jpg") for i in ids[:5]])
    assert str(error.value) == (
        f"14 files listed by split 'ghost' are missing: {shown} (and 9 more). "
        "Check the data root and the split list."
    )
    (voc / "SegmentationClassAug" / "2007_000002.png").unlink()
    (voc / "ImageSets" / "Segmentation" / "trainaug.txt").write_text("2007_000002\n")
    with pytest.raises(DatasetError, match=r"^1 files listed by split 'trainaug' are missing: "):
        VOCSegmentation(voc, "trainaug")


def test_bad_files_are_named_when_read(voc: Path) -> None:
    dataset = VOCSegmentation(voc, "train")  # opening stays cheap: no mask is decoded
    save_mask(dataset.mask_paths[0], np.full((24, 32), 30, dtype=np.uint8))
    with pytest.raises(LabelValueError, match=r"2007_000001.png has label values outside 0..20"):
        dataset.load(0)
    save_image(dataset.image_paths[1], np.zeros((20, 32, 3)))
    with pytest.raises(SizeMismatchError) as error:
        dataset.load(1)
    assert str(error.value) == (
        f"image and mask sizes differ for '2007_000002': {dataset.image_paths[1]} is 32x20, "
        f"{dataset.mask_paths[1]} is 32x24. Give every mask its image's exact size."
    )


def test_open_dataset_uses_the_environment(voc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError) as error:
        open_dataset("voc", None, "val")
    assert str(error.value) == (
        "no data root given. Pass --data-root or set DEEPLAB_DATA_ROOT to the data set folder."
    )
    monkeypatch.setenv("DEEPLAB_DATA_ROOT", str(voc.parent))
    assert len(open_dataset("voc", None, "val")) == 1
    with pytest.raises(ConfigError, match=r"^unknown data set 'coco'\. Use one of: voc, folder\.$"):
        open_dataset("coco", voc, "val")


def test_real_voc_slice(voc_root: Path) -> None:
    val = open_dataset("voc", voc_root.parent, "val")
    trainaug = open_dataset("voc", voc_root, "trainaug")
    assert (len(val), len(trainaug)) == (120, 400)
    assert (val.labels, trainaug.labels) == ("official", "aug")
    sample = val.load(0)
    assert sample.image.shape[:2] == sample.mask.shape
    assert set(np.unique(sample.mask)) <= {*range(21), 255}
    present = val.classes_present(workers=2)
    for index in (0, 57, 119):
        expected = tuple(int(c) for c in np.unique(val.load_mask(index)) if c != 255)
        assert present[index] == expected
