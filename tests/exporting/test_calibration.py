"""Calibration images for ``--int8``: which images a folder or a data set split gives, how they
are read and preprocessed, and the numpy confusion-matrix maths of the float-vs-int8 mIoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplabcli.config import Preprocessing
from deeplabcli.errors import ConfigError, DatasetError, LabelValueError
from deeplabcli.evaluation.metrics import compute_metrics, confusion_matrix
from deeplabcli.exporting.calibration import (
    confusion,
    find_calibration_images,
    load_calibration,
    mean_iou,
    spread,
)
from deeplabcli.runtimes.preprocess import preprocess

FIT = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="fit", size=33)


def image(path: Path, size=(20, 30), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_spread_picks_evenly_and_keeps_short_lists() -> None:
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread(list(range(3)), 5) == [0, 1, 2]
    assert spread(list(range(400)), 100)[:3] == [0, 4, 8]


def test_a_folder_gives_its_images_at_any_depth_without_labels(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", "sub/c.bmp", "sub/deeper/d.webp"):
        image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("skipped")
    source = find_calibration_images(tmp_path, count=100)
    assert [p.relative_to(tmp_path).as_posix() for p in source.images] == [
        "a.png", "b.jpg", "sub/c.bmp", "sub/deeper/d.webp",
    ]  # fmt: skip
    assert not source.labelled and source.available == 4
    assert source.describe() == f"4 of 4 images from {tmp_path} (without labels)"
    images = load_calibration(source, FIT, 21, progress=False)
    rgb = np.asarray(Image.open(tmp_path / "a.png"))
    expected, content = preprocess(rgb, FIT)
    assert np.array_equal(images[0].pixels, expected) and images[0].content == content == (22, 33)
    assert images[0].size == (20, 30) and images[0].mask is None


def test_a_voc_split_gives_labelled_images(voc_root: Path) -> None:
    source = find_calibration_images("voc:trainaug", voc_root.parent, count=3)
    assert source.labelled and source.available == 400 and len(source.images) == 3
    ids = (voc_root / "ImageSets" / "Segmentation" / "trainaug.txt").read_text().split()
    assert [p.stem for p in source.images] == [ids[0], ids[200], ids[399]]
    images = load_calibration(source, FIT, 21, progress=False)
    assert all(i.mask is not None and i.mask.shape == i.size for i in images)
    assert all(i.pixels.shape == (1, 3, 33, 33) for i in images)


def test_a_custom_data_set_folder_is_labelled_and_its_masks_checked(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nthing\n")
    for i in range(2):
        image(root / "images" / f"{i}.png", (8, 6), seed=i)
        Image.fromarray(np.full((8, 6), i, np.uint8)).save(root / "masks" / f"{i}.png")
    source = find_calibration_images(root)
    assert source.labelled and source.describe() == f"2 of 2 images from {root} (with labels)"
    images = load_calibration(source, Preprocessing(), 2, progress=False)
    assert [int(i.mask.max()) for i in images] == [0, 1]
    Image.fromarray(np.full((8, 6), 7, np.uint8)).save(root / "masks" / "1.png")
    with pytest.raises(LabelValueError):  # read as eval reads it: labels checked
        load_calibration(source, Preprocessing(), 2, progress=False)


def test_labels_of_another_class_count_are_not_used(tmp_path: Path, voc_root: Path, capsys):
    source = find_calibration_images("voc:val", voc_root, count=2)
    images = load_calibration(source, FIT, 3, progress=True)
    assert all(i.mask is None for i in images)
    assert "voc:val has labels of 21 classes, the model 3: calibrating on its images without an " \
        "mIoU." in " ".join(capsys.readouterr().err.split())  # fmt: skip


def test_sources_without_images_are_one_line_errors(tmp_path: Path) -> None:
    hint = "Give a folder of images, or a data set split such as voc:trainaug with --data-root."
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as error:
        find_calibration_images(tmp_path / "empty")
    assert str(error.value) == (
        f"--calibrate folder {tmp_path / 'empty'} holds no image files (.jpg, .png, .bmp, ...). "
        f"{hint}"
    )
    with pytest.raises(DatasetError, match=r"is neither a folder nor a split"):
        find_calibration_images("cityscapes:train")  # not a data set kind we read
    with pytest.raises(DatasetError, match=r"^no data root given"):
        find_calibration_images("voc:train")  # conftest clears DEEPLAB_DATA_ROOT
    with pytest.raises(ConfigError, match=r"^--calibration-images must be at least 1, not 0\.$"):
        find_calibration_images(tmp_path, count=0)


def test_confusion_and_mean_iou_are_evaluations_maths() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (40, 50)).astype(np.uint8)
    labels[:3] = 255  # ignored
    predictions = rng.integers(0, 4, (40, 50)).astype(np.uint8)  # class 4 never predicted
    cm = confusion(labels, predictions, 6)  # class 5: in neither, left out of the mean
    assert np.array_equal(cm, confusion_matrix(labels, predictions, 6))
    assert mean_iou(cm) == pytest.approx(compute_metrics(cm).miou, abs=1e-12)
    by_hand = np.array([[3, 1], [0, 2]])  # IoU 3/4 and 2/3
    assert mean_iou(by_hand) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert np.isnan(mean_iou(np.zeros((2, 2), np.int64)))
