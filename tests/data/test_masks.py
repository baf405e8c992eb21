"""Reading masks and images: class-index modes, colour masks, label ranges, conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.data_builders import save_image, save_mask

from deeplabcli.data.masks import (
    classes_in_mask,
    colour_to_index,
    convert_colour_masks,
    read_image_array,
    read_mask,
    write_index_png,
)
from deeplabcli.data.palette import colourise, voc_palette
from deeplabcli.errors import DatasetError, ImageReadError, LabelValueError, MaskFormatError

MASK = np.array([[0, 1, 2], [255, 20, 0]], dtype=np.uint8)


@pytest.mark.parametrize("mode", ["P", "L"])
def test_index_masks_read_as_values(tmp_path: Path, mode: str) -> None:
    path = save_mask(tmp_path / "m.png", MASK, mode)
    mask = read_mask(path, 21)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, MASK)


def test_16_bit_and_binary_masks_are_indices(tmp_path: Path) -> None:
    Image.fromarray(MASK.astype(np.uint16)).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    np.testing.assert_array_equal(read_mask(tmp_path / "wide.png", 21), MASK)
    Image.fromarray(MASK > 0).save(tmp_path / "binary.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "binary.png", 2), (MASK > 0) * 1)


def test_16_bit_mask_above_255_names_values(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 300], [1000, 1]], dtype=np.uint16)).save(tmp_path / "w.png")
    with pytest.raises(LabelValueError) as error:
        read_mask(tmp_path / "w.png", 21)
    assert str(error.value) == (
        f"{tmp_path / 'w.png'} has label values outside 0..20 and 255: 300, 1000. "
        "Fix the mask, or check that the data set has 21 classes."
    )


def test_rgb_mask_is_refused_with_the_conversion_route(tmp_path: Path) -> None:
    path = save_image(tmp_path / "masks" / "x.png", colourise(MASK, voc_palette()))
    with pytest.raises(MaskFormatError) as error:
        read_mask(path, 21)
    masks = tmp_path / "masks"
    assert str(error.value) == (
        f"{path} is an RGB colour mask, not a class-index mask. Convert the colour masks with "
        f"`deeplab data convert-masks {masks} -o {tmp_path / 'masks_index'}` (class colours → "
        f"class indices) and use the converted masks in place of {masks}, or save masks as "
        "palette (P) or grayscale (L) PNGs of class indices."
    )


def test_other_modes_are_refused(tmp_path: Path) -> None:
    Image.fromarray(MASK.astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(MaskFormatError) as error:
        read_mask(tmp_path / "f.tif", 21)
    assert str(error.value) == (
        f"{tmp_path / 'f.tif'} has image mode 'F', not a class-index mask. Save masks as "
        "palette (P) or grayscale (L) PNGs whose values are class indices (255 = ignore)."
    )


def test_label_values_out_of_range_are_named(tmp_path: Path) -> None:
    path = save_mask(tmp_path / "m.png", MASK, "L")
    assert read_mask(path) is not None  # no class count: no range check
    with pytest.raises(LabelValueError) as error:
        read_mask(path, 3)
    assert str(error.value) == (
        f"{path} has label values outside 0..2 and 255: 20. "
        "Fix the mask, or check that the data set has 3 classes."
    )
    many = np.arange(100, 120, dtype=np.uint8).reshape(4, 5)
    with pytest.raises(LabelValueError, match=r": 100, 101, .*, 109 \(and 10 more\)\. Fix"):
        read_mask(save_mask(tmp_path / "many.png", many, "L"), 21)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError) as error:
        read_mask(tmp_path / "bad.png", 21)
    assert str(error.value).startswith(f"cannot read mask {tmp_path / 'bad.png'}: ")
    assert str(error.value).endswith(". Check that the file is a complete, valid PNG.")
    truncated = tmp_path / "cut.jpg"
    save_image(truncated, np.zeros((64, 64, 3)))
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageReadError) as error:
        read_image_array(truncated)
    assert str(error.value).startswith(f"cannot read image {truncated}: ")
    assert "\n" not in str(error.value)


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(MASK).save(tmp_path / "grey.png")
    rgb = read_image_array(tmp_path / "grey.png")
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    np.testing.assert_array_equal(rgb[..., 1], MASK)


def test_classes_in_mask_ignores_void() -> None:
    assert classes_in_mask(MASK, 21) == (0, 1, 2, 20)
    assert classes_in_mask(MASK, 2) == (0, 1)


def test_colour_to_index_inverts_the_voc_palette() -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, (40, 50)).astype(np.uint8)
    mask[:3] = 255
    palette = voc_palette()
    np.testing.assert_array_equal(colour_to_index(colourise(mask, palette), palette[:21]), mask)


def test_colour_to_index_names_unknown_colours() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 2, 3)
    rgb[1, 1] = (255, 255, 255)
    with pytest.raises(MaskFormatError) as error:
        colour_to_index(rgb, voc_palette()[:21], path="x.png")
    assert str(error.value) == (
        "x.png has colours that belong to no class: (1, 2, 3), (255, 255, 255). "
        "Give every class its colour in the classes file (e.g. 'cat 64 0 0')."
    )


def test_convert_colour_masks_writes_palette_pngs(tmp_path: Path) -> None:
    palette = voc_palette()
    save_image(tmp_path / "src" / "sub" / "a.png", colourise(MASK, palette))
    save_mask(tmp_path / "src" / "b.png", MASK, "L")  # already indices: kept as they are
    (tmp_path / "src" / "broken.png").write_bytes(b"")
    written, failed = convert_colour_masks(
        tmp_path / "src", tmp_path / "out", palette[:21], palette
    )
    assert [(p.name, m.split(":")[0]) for p, m in failed] == [
        ("broken.png", f"cannot read mask {tmp_path / 'src' / 'broken.png'}")
    ]
    assert written == [tmp_path / "out" / "b.png", tmp_path / "out" / "sub" / "a.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.mode == "P"
            assert np.array_equal(np.array(image.getpalette()).reshape(-1, 3), palette)
        np.testing.assert_array_equal(read_mask(path, 21), MASK)
    with pytest.raises(DatasetError) as error:
        convert_colour_masks(tmp_path / "src", tmp_path / "out", palette[:21], palette)
    assert str(error.value) == (
        f"2 output masks already exist: {written[0]}, {written[1]}. "
        "Pass --overwrite to replace them."
    )
    convert_colour_masks(tmp_path / "src", tmp_path / "out", palette[:21], palette, overwrite=True)


def test_write_index_png_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "deep" / "m.png"
    write_index_png(target, MASK, voc_palette())
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.png"]

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_index_png(tmp_path / "deep" / "n.png", MASK, voc_palette())
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.png"]
