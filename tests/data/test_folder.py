"""Custom folder data sets: the classes file, the layout, splits and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.data_builders import make_folder, save_image, save_mask

from deeplabcli.data import open_dataset
from deeplabcli.data.folder import ClassSpec, FolderDataset, read_classes_file
from deeplabcli.data.palette import voc_palette
from deeplabcli.errors import DatasetError, MaskFormatError


def _classes(tmp_path: Path, text: str) -> list[ClassSpec]:
    path = tmp_path / "classes.txt"
    path.write_text(text)
    return read_classes_file(path)


def test_classes_file_names_and_colours(tmp_path: Path) -> None:
    specs = _classes(
        tmp_path, "# my classes\nbackground\n\ncat 64 0 0\npotted plant #00FF80\nroad  1 2 3 \n"
    )
    assert specs == [
        ClassSpec("background"),
        ClassSpec("cat", (64, 0, 0)),
        ClassSpec("potted plant", (0, 255, 128)),
        ClassSpec("road", (1, 2, 3)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "bg\ncat 64 0 300\n",
            "{path} line 2: colour values must be 0..255, got 64 0 300. "
            "Write colours as 'name R G B' or 'name #RRGGBB'.",
        ),
        (
            "bg\ncat #12345\n",
            "{path} line 2: '#12345' is not a colour. "
            "Write colours as 'name R G B' or 'name #RRGGBB'.",
        ),
        (
            "cat\ndog\ncat 1 2 3\n",
            "classes file {path} names cat more than once. Give every class a distinct name.",
        ),
        (
            "\n# only a comment\n",
            "classes file {path} lists no classes. Write one class name per line.",
        ),
        (
            "".join(f"c{i}\n" for i in range(256)),
            "classes file {path} lists 256 classes; at most 255 fit in a mask (255 means "
            "ignore). Merge or drop classes.",
        ),
    ],
)
def test_classes_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError) as error:
        _classes(tmp_path, text)
    assert str(error.value) == message.format(path=tmp_path / "classes.txt")


def test_all_split_and_palette_from_colours(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ["b", "a", "c"])
    dataset = FolderDataset(root)
    assert dataset.split == "all" and dataset.ids == ["a", "b", "c"]
    assert dataset.class_names == ("background", "cat", "dog")
    assert dataset.palette[1].tolist() == [64, 0, 0] and dataset.palette[2].tolist() == [0, 255, 0]
    np.testing.assert_array_equal(dataset.palette[0], voc_palette()[0])
    np.testing.assert_array_equal(dataset.palette[255], voc_palette()[255])
    sample = dataset.load(1)
    assert sample.id == "b" and sample.image.shape == (20, 30, 3) and sample.mask.shape == (20, 30)


def test_subfolders_suffixes_and_split_lists(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ["a"])
    save_image(root / "images" / "city" / "x.jpg", np.zeros((8, 8, 3)))
    save_mask(root / "masks" / "city" / "x.png", np.ones((8, 8)), "L")
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("city/x.jpg\na\n")
    assert FolderDataset(root).ids == ["a", "city/x"]
    val = FolderDataset(root, "val")
    assert val.ids == ["city/x", "a"]
    assert val.image_paths[0] == root / "images" / "city" / "x.jpg"
    listed = tmp_path / "one.txt"
    listed.write_text("a\n")
    assert FolderDataset(root, str(listed)).ids == ["a"]
    with pytest.raises(DatasetError) as error:
        FolderDataset(root, "train")
    assert str(error.value) == (
        f"split 'train' not found: {root / 'splits' / 'train.txt'} does not exist. "
        "Use one of: all, val, or give the path of a list file."
    )


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        FolderDataset(tmp_path / "none")
    assert str(error.value) == (
        f"data root {tmp_path / 'none'} does not exist. Give --data-root (or DEEPLAB_DATA_ROOT) "
        "as the folder that holds images/, masks/ and classes.txt."
    )
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError) as error:
        FolderDataset(tmp_path)
    assert str(error.value) == (
        f"{tmp_path} has no masks/ folder. "
        "A custom data set is ROOT/images, ROOT/masks and ROOT/classes.txt."
    )
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError) as error:
        FolderDataset(tmp_path)
    assert str(error.value) == (
        f"classes file {tmp_path / 'classes.txt'} does not exist. Write one class name per "
        "line, in index order (optionally followed by its colour, e.g. 'cat 64 0 0')."
    )
    (tmp_path / "classes.txt").write_text("bg\nfg\n")
    with pytest.raises(DatasetError) as error:
        FolderDataset(tmp_path)
    assert str(error.value) == (
        f"no images found in {tmp_path / 'images'}. Add images (JPEG, PNG, BMP, TIFF, WebP, ...)."
    )


def test_images_without_masks_are_listed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ["a", "b"])
    for stem in ("c", "d"):
        save_image(root / "images" / f"{stem}.jpg", np.zeros((4, 4, 3)))
    with pytest.raises(DatasetError) as error:
        FolderDataset(root)
    assert str(error.value) == (
        f"2 masks are missing: {root / 'masks' / 'c.png'}, {root / 'masks' / 'd.png'}. Add a "
        "mask with each image's name, or list the images to use in splits/<name>.txt."
    )
    (root / "splits").mkdir()
    (root / "splits" / "ok.txt").write_text("a\nb\n")
    assert len(FolderDataset(root, "ok")) == 2
    (root / "splits" / "empty.txt").write_text("")
    with pytest.raises(DatasetError) as error:
        FolderDataset(root, "empty")
    assert str(error.value) == (
        f"split 'empty' ({root / 'splits' / 'empty.txt'}) lists no images. "
        "Add image stems to it, one per line."
    )


def test_colour_masks_and_class_count_are_checked_on_read(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ["a", "b"])
    save_mask(root / "masks" / "a.png", np.full((20, 30), 3), "L")  # 3 classes: 0..2
    save_image(root / "masks" / "b.png", np.zeros((20, 30, 3)))
    dataset = open_dataset("folder", root, "all")
    with pytest.raises(DatasetError, match=r"a\.png has label values outside 0\.\.2 and 255: 3\."):
        dataset.load(0)
    with pytest.raises(MaskFormatError, match=r"b\.png is an RGB colour mask"):
        dataset.load(1)


def test_classes_present_per_image(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ["a", "b"])
    save_mask(root / "masks" / "a.png", np.array([[0, 2], [255, 2]]), "L")
    save_mask(root / "masks" / "b.png", np.array([[1, 1], [1, 255]]), "P")
    for stem in ("a", "b"):
        save_image(root / "images" / f"{stem}.png", np.zeros((2, 2, 3)))
    (root / "splits").mkdir()
    (root / "splits" / "boot.txt").write_text("a\nb\na\n")
    dataset = FolderDataset(root, "boot")
    calls: list[int] = []
    assert dataset.classes_present(workers=2, on_progress=calls.append) == [(0, 2), (1,), (0, 2)]
    assert calls == [1, 1]  # each distinct mask read once


def test_folder_images_use_the_suffixes_predict_scans_for(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "set", ["a"])
    image = root / "images" / "a.png"
    image.rename(root / "images" / "a.PPM")  # a PNG named .PPM: Pillow reads by content
    save_mask(root / "masks" / "b.png", np.zeros((20, 30), dtype=np.uint8), "L")
    save_image(root / "images" / "b.tga", np.zeros((20, 30, 3), dtype=np.uint8))
    data = open_dataset("folder", root, "all")
    assert [p.name for p in data.image_paths] == ["a.PPM", "b.tga"]
    sample = data[1]
    assert sample.image.shape == (20, 30, 3) and sample.mask.shape == (20, 30)
