"""SBD → SegmentationClassAug + trainaug.txt, from tiny .mat files written with scipy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.data_builders import make_voc, random_mask, save_image

from deeplabcli.data import open_dataset
from deeplabcli.data.palette import voc_palette
from deeplabcli.data.sbd import prepare_voc, read_sbd_mask, trainaug_ids
from deeplabcli.errors import DatasetError, LabelValueError, MissingDependencyError

scipy_io = pytest.importorskip("scipy.io")

VOC_TRAIN, VOC_VAL = ["2007_000001", "2007_000002"], ["2007_000009", "2008_000009"]
SBD_TRAIN = ["2008_000101", "2008_000102", "2007_000009", "2007_000001"]
SBD_VAL = ["2008_000103", "2007_000002"]
TRAINAUG = ["2007_000001", "2007_000002", "2008_000101", "2008_000102", "2008_000103"]


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gt = {
        "Segmentation": segmentation.astype(np.uint8),
        "Boundaries": np.zeros((1, 20), dtype=object),
        "CategoriesPresent": np.unique(segmentation[segmentation > 0]).astype(np.uint8),
    }
    scipy_io.savemat(str(path), {"GTcls": gt})


def make_sbd(root: Path, *, seed: int = 1) -> tuple[Path, dict[str, np.ndarray]]:
    """``root/benchmark_RELEASE/dataset`` with cls/*.mat, img/*.jpg and the two lists."""
    rng = np.random.default_rng(seed)
    dataset = root / "benchmark_RELEASE" / "dataset"
    masks = {}
    for image_id in dict.fromkeys(SBD_TRAIN + SBD_VAL):
        mask = random_mask(rng, (24, 32), 21)
        mask[mask == 255] = 0  # SBD has no void border
        masks[image_id] = mask
        write_sbd_mat(dataset / "cls" / f"{image_id}.mat", mask)
        save_image(dataset / "img" / f"{image_id}.jpg", rng.integers(0, 256, (24, 32, 3)))
    (dataset / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (dataset / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return root / "benchmark_RELEASE", masks


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    voc = make_voc(tmp_path / "voc", {"train": VOC_TRAIN, "val": VOC_VAL})
    for stale in (voc / "SegmentationClassAug").iterdir():
        stale.unlink()
    sbd, masks = make_sbd(tmp_path / "sbd")
    return sbd, voc, masks


def test_trainaug_ids_is_sbd_plus_voc_train_minus_voc_val() -> None:
    assert trainaug_ids(SBD_TRAIN, SBD_VAL, VOC_TRAIN, VOC_VAL) == TRAINAUG
    assert trainaug_ids(["b", "a", "a"], [], ["c", "v"], ["v"]) == ["a", "b", "c"]


def test_read_sbd_mask(tmp_path: Path) -> None:
    segmentation = np.array([[0, 1], [20, 15]], dtype=np.uint8)
    write_sbd_mat(tmp_path / "x.mat", segmentation)
    np.testing.assert_array_equal(read_sbd_mask(tmp_path / "x.mat"), segmentation)
    write_sbd_mat(tmp_path / "bad.mat", np.array([[0, 21]]))
    with pytest.raises(
        LabelValueError, match=r"bad\.mat has label values outside 0\.\.20 and 255: 21\."
    ):
        read_sbd_mask(tmp_path / "bad.mat")
    scipy_io.savemat(str(tmp_path / "other.mat"), {"something": np.zeros(3)})
    with pytest.raises(DatasetError) as error:
        read_sbd_mask(tmp_path / "other.mat")
    assert str(error.value) == (
        f"cannot read SBD mask {tmp_path / 'other.mat'}: KeyError. "
        "Check that the file is an SBD cls/*.mat file with GTcls.Segmentation."
    )


def test_prepare_voc_writes_masks_and_the_list(layout) -> None:
    sbd, voc, masks = layout
    progress: list[int] = []
    summary = prepare_voc(sbd, voc.parent, on_start=progress.append, on_progress=progress.append)
    assert progress[0] == 7 and progress[1:] == [1] * 7
    assert (summary.from_sbd, summary.from_voc, summary.skipped) == (3, 4, 0)
    assert summary.trainaug_ids == 5 and summary.images_copied == 3
    assert summary.list_path.read_text() == "".join(f"{i}\n" for i in TRAINAUG)
    aug = voc / "SegmentationClassAug"
    for image_id in ("2008_000101", "2008_000102", "2008_000103"):
        with Image.open(aug / f"{image_id}.png") as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(
                np.array(image.getpalette()).reshape(-1, 3), voc_palette()
            )
            np.testing.assert_array_equal(np.array(image), masks[image_id])
    for image_id in VOC_TRAIN + VOC_VAL:  # official masks win over SBD's (same bytes)
        official = (voc / "SegmentationClass" / f"{image_id}.png").read_bytes()
        assert (aug / f"{image_id}.png").read_bytes() == official
    assert not [p for p in voc.rglob("*") if p.name.endswith(".tmp")]
    trainaug = open_dataset("voc", voc, "trainaug")
    assert trainaug.ids == TRAINAUG and trainaug.labels == "aug"
    assert trainaug.load(4).mask.shape == (24, 32)


def test_prepare_voc_is_idempotent(layout) -> None:
    sbd, voc, _ = layout
    prepare_voc(sbd, voc)
    files = sorted((voc / "SegmentationClassAug").iterdir())
    stamps = [p.stat().st_mtime_ns for p in files]
    again = prepare_voc(sbd / "dataset", voc)
    assert (again.from_sbd, again.from_voc, again.skipped, again.images_copied) == (0, 0, 7, 0)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    list_stamp = again.list_path.stat().st_mtime_ns
    prepare_voc(sbd, voc, overwrite=True)
    assert again.list_path.stat().st_mtime_ns == list_stamp  # same content: not rewritten
    files[-1].unlink()  # an interrupted run: only the missing mask is redone
    resumed = prepare_voc(sbd, voc)
    assert (resumed.from_sbd + resumed.from_voc, resumed.skipped) == (1, 6)


def test_prepare_voc_errors(layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sbd, voc, _ = layout
    with pytest.raises(DatasetError) as error:
        prepare_voc(tmp_path / "missing", voc)
    assert str(error.value) == (
        f"SBD folder {tmp_path / 'missing'} does not exist. Give --sbd as the unpacked "
        "benchmark_RELEASE (or its dataset/ folder)."
    )
    with pytest.raises(DatasetError) as error:
        prepare_voc(voc, voc)
    assert str(error.value) == (
        f"{voc} is not an SBD release (no cls/ or dataset/cls/ folder inside). "
        "Give --sbd as the unpacked benchmark_RELEASE (or its dataset/ folder)."
    )
    (sbd / "dataset" / "cls" / "2008_000102.mat").unlink()
    with pytest.raises(DatasetError) as error:
        prepare_voc(sbd, voc)
    assert str(error.value) == (
        f"1 files listed by split 'SBD train/val' are missing: "
        f"{sbd / 'dataset' / 'cls' / '2008_000102.mat'}. Check the data root and the split list."
    )
    assert not (voc / "SegmentationClassAug").exists() or not any(
        (voc / "SegmentationClassAug").iterdir()
    )


def test_missing_scipy_says_how_to_install(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    sbd, voc, _ = layout
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import scipy.io now fails
    with pytest.raises(MissingDependencyError) as error:
        prepare_voc(sbd, voc)
    assert str(error.value) == (
        "reading the SBD release needs scipy, which is not installed. "
        'Install it from the deeplabcli checkout with pip install ".[sbd]" (pipx: pipx inject '
        'deeplabcli scipy; from PyPI once published: pip install "deeplabcli[sbd]").'
    )
    assert not any((voc / "SegmentationClassAug").glob("*.png"))
    assert not (voc / "JPEGImages" / "2008_000101.jpg").exists()  # nothing copied either


def test_an_image_in_neither_voc_nor_sbd_is_listed(layout) -> None:
    sbd, voc, _ = layout
    (sbd / "dataset" / "img" / "2008_000103.jpg").unlink()
    with pytest.raises(DatasetError) as error:
        prepare_voc(sbd, voc)
    assert str(error.value) == (
        f"1 files listed by split 'trainaug' are missing: "
        f"{voc / 'JPEGImages' / '2008_000103.jpg'}. Check the data root and the split list."
    )
