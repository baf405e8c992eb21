"""Predict as a library: reading any image, writing masks atomically, planning outputs, the API."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deeplabcli
from deeplabcli import build_model
from deeplabcli.data.images import read_image
from deeplabcli.data.palette import voc_palette
from deeplabcli.distributed import World, shard, world_from_env
from deeplabcli.errors import ConfigError, ImageReadError, OutputWriteError
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.prediction.inputs import expand_inputs, plan_outputs
from deeplabcli.prediction.outputs import index_png, overlay_png, palette_png, write_png
from deeplabcli.prediction.pipeline import class_shares


def save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def rgb(height: int = 12, width: int = 16, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------- reading
def test_every_colour_mode_becomes_8_bit_rgb(tmp_path: Path) -> None:
    base = rgb()
    cases = {
        "gray.png": base.convert("L"),
        "rgba.png": base.convert("RGBA"),
        "cmyk.jpg": base.convert("CMYK"),
        "palette.png": base.convert("P"),
        "bilevel.png": base.convert("1"),
        "la.png": base.convert("LA"),
    }
    for name, image in cases.items():
        out = read_image(save(tmp_path / name, image))
        assert out.mode == "RGB" and out.size == (16, 12), name
    rgba = np.asarray(read_image(tmp_path / "rgba.png"))
    assert np.array_equal(rgba, np.asarray(base))  # alpha dropped, colours kept
    transparent = base.convert("P")
    transparent.info["transparency"] = 0
    assert read_image(save(tmp_path / "t.png", transparent)).mode == "RGB"


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    gray = np.full((4, 6), 100 * 257, dtype=np.uint16)
    gray[0, 0] = 65535
    out = np.asarray(read_image(save(tmp_path / "g16.png", Image.fromarray(gray))))
    assert out[1, 1].tolist() == [100, 100, 100] and out[0, 0].tolist() == [255, 255, 255]
    dark = Image.fromarray(np.full((2, 2), 200 * 257 // 255, dtype=np.uint16))  # max ≤ 255
    assert np.asarray(read_image(save(tmp_path / "dark16.png", dark)))[0, 0].tolist() == [1, 1, 1]
    colour = np.zeros((3, 5, 3), np.uint16)
    colour[..., 0], colour[..., 1] = 65535, 200 * 257
    (tmp_path / "c16.png").write_bytes(png16_rgb(colour))
    assert np.asarray(read_image(tmp_path / "c16.png"))[2, 4].tolist() == [255, 200, 0]


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    image = Image.new("RGB", (30, 10), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 5, 10))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    path = save(tmp_path / "rotated.jpg", image, exif=exif, quality=95)
    out = np.asarray(read_image(path))
    assert out.shape == (30, 10, 3)
    assert out[2, 5, 2] > 200 and out[-2, 5, 0] > 200  # the left band is now at the top


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name → (path, the exact error message read_image gives)."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    data = io.BytesIO()
    rgb(64, 64).save(data, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    truncated_by = r"\d+"  # the byte count depends on the JPEG codec build
    return {
        "missing": (tmp_path / "missing.jpg", f"{tmp_path / 'missing.jpg'}: no such file. Check the path."),
        "empty": (empty, f"{empty}: file is empty (0 bytes). Re-copy or re-download the image."),
        "text": (
            text,
            f"{text}: not an image (unknown format). Give a JPEG, PNG, BMP, TIFF or WebP file.",
        ),
        "truncated": (
            truncated,
            f"{truncated}: image is truncated or corrupt: image file is truncated "
            f"({truncated_by} bytes not processed). Re-copy or re-download the image.",
        ),
    }  # fmt: skip


def test_unreadable_files_raise_one_line_errors(tmp_path: Path) -> None:
    for name, (path, message) in bad_files(tmp_path).items():
        with pytest.raises(ImageReadError) as error:
            read_image(path)
        assert re.fullmatch(
            re.escape(message).replace(re.escape(r"\d+"), r"\d+"), str(error.value)
        ), name
        assert "\n" not in str(error.value)
    with pytest.raises(ImageReadError, match="is a directory, not an image"):
        read_image(tmp_path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets filters
def test_images_above_the_decompression_bomb_limit_are_refused(tmp_path, monkeypatch) -> None:
    path = save(tmp_path / "big.png", rgb(40, 50))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert str(error.value) == (
        f"{path}: image is too large (50×40 = 2,000 pixels, above Pillow's decompression-bomb "
        "limit of 1,000). Downscale it first."
    )


# ---------------------------------------------------------------------- writing
def test_write_png_is_atomic_and_does_not_replace_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "mask.png"
    assert write_png(index_png(np.zeros((3, 4), np.uint8)), target, overwrite=False)
    assert not write_png(index_png(np.ones((3, 4), np.uint8)), target, overwrite=False)
    assert np.asarray(Image.open(target)).max() == 0
    assert write_png(index_png(np.ones((3, 4), np.uint8)), target, overwrite=True)
    assert np.asarray(Image.open(target)).min() == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.png"]  # no temp files


def test_write_png_into_an_unwritable_place_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputWriteError) as error:
        write_png(index_png(np.zeros((2, 2), np.uint8)), blocker / "mask.png", overwrite=False)
    assert str(error.value) == (
        f"cannot write {blocker / 'mask.png'} (Not a directory). "
        "Choose a writable output location with -o."
    )


def test_mask_encodings() -> None:
    mask = np.array([[0, 1, 15], [255, 20, 3]], dtype=np.uint8)
    palette = palette_png(mask, voc_palette())
    assert palette.mode == "P" and np.array_equal(np.asarray(palette), mask)
    assert palette.getpalette()[: 3 * 256] == voc_palette().ravel().tolist()
    assert index_png(mask).mode == "L"
    wide = index_png(np.array([[0, 300]], dtype=np.int64))
    assert np.asarray(wide).tolist() == [[0, 300]]


def test_overlay_blends_classes_and_adds_a_legend() -> None:
    photo = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[:, 40:] = 15  # person
    names = deeplabcli.VOC_CLASSES
    out = np.asarray(overlay_png(photo, mask, voc_palette(), names))
    assert out.shape[1] == 80 and out.shape[0] > 60  # legend strip below
    assert out[10, 10].tolist() == [100, 100, 100]  # background untouched
    person = voc_palette()[15].astype(float)
    assert np.allclose(out[10, 60], 0.5 * 100 + 0.5 * person, atol=1)
    legend = out[60:]
    assert (legend != 255).any()  # something is drawn


def test_class_shares_are_sorted_fractions() -> None:
    mask = np.array([[0, 0, 0, 15], [15, 15, 8, 0]], dtype=np.uint8)
    shares = class_shares(mask, deeplabcli.VOC_CLASSES)
    assert shares == [
        {"index": 0, "name": "background", "share": 0.5},
        {"index": 15, "name": "person", "share": 0.375},
        {"index": 8, "name": "cat", "share": 0.125},
    ]


# ---------------------------------------------------------------------- planning
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "JPEGImages"
    for name in ("a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.bmp"):
        save(root / name, rgb())
    (root / "readme.txt").write_text("not an image")
    return root


def test_output_names_mirror_the_inputs(tmp_path: Path) -> None:
    root = tree(tmp_path)
    jobs, problems = plan_outputs([str(root)], str(tmp_path / "out"))
    assert problems == []
    assert [(j.source.relative_to(root).as_posix(), j.output.relative_to(tmp_path).as_posix())
            for j in jobs] == [
        ("a.jpg", "out/a.png"), ("b.png", "out/b.png"), ("sub/c.jpg", "out/sub/c.png"),
        ("sub/deeper/d.bmp", "out/sub/deeper/d.png"),
    ]  # fmt: skip
    jobs, _ = plan_outputs([str(root / "a.jpg")], str(tmp_path / "m.png"))
    assert [j.output for j in jobs] == [tmp_path / "m.png"]
    jobs, _ = plan_outputs([str(root / "a.jpg")], str(tmp_path / "masks"))
    assert [j.output for j in jobs] == [tmp_path / "masks" / "a.png"]
    jobs, _ = plan_outputs([str(root / "sub" / "c.jpg")], None)
    assert [j.output for j in jobs] == [root / "sub" / "c_mask.png"]


def test_globs_mirror_paths_below_their_base(tmp_path: Path) -> None:
    root = tree(tmp_path)
    jobs, problems = plan_outputs([f"{root}/**/*.jpg"], str(tmp_path / "out"))
    assert problems == []
    assert [j.output.relative_to(tmp_path / "out").as_posix() for j in jobs] == [
        "a.png",
        "sub/c.png",
    ]
    _, problems = plan_outputs([f"{root}/*.gif"], str(tmp_path / "out"))
    assert problems == [(f"{root}/*.gif", f"{root}/*.gif: no files match this pattern. Check the pattern.")]  # fmt: skip


def test_earlier_outputs_are_not_read_as_inputs(tmp_path: Path) -> None:
    root = tree(tmp_path)
    save(root / "a_mask.png", rgb())
    save(root / "masks" / "old.png", rgb())
    jobs, _ = plan_outputs([str(root)], None)
    assert "a_mask.png" not in [j.source.name for j in jobs]
    jobs, _ = plan_outputs([str(root)], str(root / "masks"))
    assert "old.png" not in [j.source.name for j in jobs]
    assert "a_mask.png" in [j.source.name for j in jobs]


def test_planning_problems(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (tmp_path / "empty").mkdir()
    save(root / "other" / "a.jpg", rgb())
    inputs = [str(root / "a.jpg"), str(root / "other" / "a.jpg"), str(tmp_path / "empty"),
              str(tmp_path / "nope.jpg"), str(root / "a.jpg")]  # fmt: skip
    jobs, problems = plan_outputs(inputs, str(tmp_path / "out"))
    assert [j.source for j in jobs] == [root / "a.jpg"]  # the duplicate input is dropped
    out = tmp_path / "out" / "a.png"
    assert [m for _, m in problems] == [
        f"{tmp_path / 'empty'}: no images in this folder. Give a folder of image files "
        "(.jpg, .png, .bmp, .tif, .webp, ...).",
        f"{tmp_path / 'nope.jpg'}: no such file or directory. Check the path.",
        f"{root / 'other' / 'a.jpg'}: its mask {out} is also the mask of {root / 'a.jpg'}. "
        "Predict these images into separate folders.",
    ]
    _, problems = plan_outputs([str(root / "b.png")], str(root))
    assert problems == [
        (str(root / "b.png"), f"{root / 'b.png'}: its mask would replace the image itself. "
         "Choose another output location with -o.")
    ]  # fmt: skip


def test_output_file_names_need_one_png_input(tmp_path: Path) -> None:
    root = tree(tmp_path)
    with pytest.raises(ConfigError) as error:
        plan_outputs([str(root)], str(tmp_path / "mask.png"))
    assert str(error.value) == (
        f"-o {tmp_path / 'mask.png'} names one file but the inputs are several images, a "
        "folder or a pattern. Give -o a folder."
    )
    with pytest.raises(ConfigError, match=r"masks are PNG files, not \.jpg"):
        plan_outputs([str(root / "a.jpg")], str(tmp_path / "mask.jpg"))


def test_expand_inputs_keeps_explicit_files_of_any_suffix(tmp_path: Path) -> None:
    odd = save(tmp_path / "photo.data", rgb(), format="PNG")
    found, problems = expand_inputs([str(odd)])
    assert found == [(odd, Path("photo.data"))] and problems == []


# ---------------------------------------------------------------------- API and helpers
def test_predict_api_accepts_images_arrays_and_paths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    image = rgb(25, 31)
    path = save(tmp_path / "x.png", image)
    mask = deeplabcli.predict(model, image)
    assert mask.shape == (25, 31) and mask.dtype == np.uint8
    assert np.array_equal(deeplabcli.predict(model, np.asarray(image)), mask)
    assert np.array_equal(deeplabcli.predict(model, path), mask)
    assert np.array_equal(deeplabcli.predict(Segmenter(model, device="cpu"), str(path)), mask)
    masks = deeplabcli.predict_batch(model, [image, rgb(10, 12, 1), path])
    assert [m.shape for m in masks] == [(25, 31), (10, 12), (25, 31)]
    assert np.array_equal(masks[2], mask)
    at8 = deeplabcli.predict(model, image, output_stride=8, scales=(0.5, 1), flip=True)
    assert at8.shape == (25, 31) and model.output_stride == 16


def test_shards_cover_everything_once() -> None:
    items = list(range(11))
    shards = [shard(items, World(rank=r, size=3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == items
    assert shards[1] == [1, 4, 7, 10]


def test_world_comes_from_torchrun_variables(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_from_env() == World(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = world_from_env()
    assert (world.rank, world.size, world.local_rank, world.is_main) == (3, 4, 1, False)
    assert os.environ["RANK"] == "3"


def test_an_image_that_runs_out_of_memory_fails_alone(tmp_path: Path) -> None:
    from deeplabcli.config import PredictConfig
    from deeplabcli.prediction.pipeline import predict_files

    torch.manual_seed(0)
    segmenter = Segmenter(build_model("deeplabv3_tiny"), device="cpu")
    real_masks = segmenter.masks

    def masks(pixels):  # simulated (tests cannot run out of memory): batches of several
        # images and the white image are too big for the allocator
        if len(pixels) > 1 or any(bool((p == 255).all()) for p in pixels):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")
        return real_masks(pixels)

    segmenter.masks = masks  # type: ignore[method-assign]
    save(tmp_path / "in" / "a.png", rgb(20, 30))
    save(tmp_path / "in" / "big.png", Image.new("RGB", (30, 20), (255, 255, 255)))
    save(tmp_path / "in" / "b.png", rgb(20, 30, seed=1))
    config = PredictConfig(output=str(tmp_path / "out"), batch_size=3)
    summary = predict_files(segmenter, [str(tmp_path / "in")], config, progress=False)
    assert (summary.written, summary.failed) == (2, 1)
    assert [f.message for f in summary.failures] == [
        f"{tmp_path / 'in' / 'big.png'}: ran out of memory segmenting this 30×20 image on cpu. "
        "Downscale it, or use fewer --scales."
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="brings its own"):
        predict_files(segmenter, [], PredictConfig(flip=True))


# ---------------------------------------------------------------------- compute streams
def _folder_of_images(root: Path, count: int) -> Path:
    for i in range(count):  # two sizes, so batches form per size
        save(root / f"img{i:02d}.png", rgb(20 + 7 * (i % 2), 30, seed=i))
    return root


@pytest.mark.parametrize(("streams", "batch_size"), [(2, 1), (3, 2), (4, 3)])
def test_streams_write_the_same_masks_and_report_on_the_calling_thread(
    tmp_path: Path, streams: int, batch_size: int
) -> None:
    import threading

    from deeplabcli.config import PredictConfig
    from deeplabcli.prediction.pipeline import predict_files

    torch.manual_seed(0)
    segmenter = Segmenter(build_model("deeplabv3_tiny"), device="cpu")
    inputs = [str(_folder_of_images(tmp_path / "in", 9))]
    one = PredictConfig(output=str(tmp_path / "one"), streams=1, batch_size=batch_size)
    many = PredictConfig(output=str(tmp_path / "many"), streams=streams, batch_size=batch_size)
    threads_before = torch.get_num_threads()
    callers: set[str] = set()
    reference = predict_files(segmenter, inputs, one, progress=False)
    summary = predict_files(
        segmenter, inputs, many, progress=False,
        on_result=lambda _: callers.add(threading.current_thread().name),
    )  # fmt: skip
    assert callers == {threading.current_thread().name}
    assert torch.get_num_threads() == threads_before  # the streams' share is given back
    assert (summary.written, summary.failed) == (reference.written, reference.failed) == (9, 0)
    for i in range(9):
        name = f"img{i:02d}.png"
        with Image.open(tmp_path / "one" / name) as a, Image.open(tmp_path / "many" / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), name


def test_stream_count_follows_model_size_device_and_work(monkeypatch) -> None:
    from deeplabcli.inference import streams as streams_module
    from deeplabcli.inference.streams import choose_streams

    small = Segmenter(build_model("deeplabv3_tiny"), device="cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert choose_streams(small, None, batches=5) == 2
    assert choose_streams(small, None, batches=1) == 1  # nothing to overlap
    assert choose_streams(small, None, batches=5, batch_size=8) == 1  # batches fill threads
    assert choose_streams(small, 2, batches=5, batch_size=8) == 2  # unless asked
    assert choose_streams(small, 4, batches=3) == 3  # no idle streams
    assert choose_streams(small, 1, batches=5) == 1
    monkeypatch.setattr(streams_module, "SMALL_MODEL_BYTES", 1000)
    assert choose_streams(small, None, batches=5) == 1  # a large model keeps one stream
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(streams_module, "SMALL_MODEL_BYTES", 2**40)
    assert choose_streams(small, None, batches=5) == 1  # one thread cannot be shared
    training = Segmenter(build_model("deeplabv3_tiny").train(), device="cpu", optimize=False)
    assert training.network.training
    assert choose_streams(training, 2, batches=5) == 1


def test_a_stream_that_fails_surfaces_its_error(tmp_path: Path) -> None:
    from deeplabcli.config import PredictConfig
    from deeplabcli.prediction.pipeline import predict_files

    segmenter = Segmenter(build_model("deeplabv3_tiny"), device="cpu")

    def broken(pixels):
        raise RuntimeError("a bug in the network")

    segmenter.masks = broken  # type: ignore[method-assign]
    inputs = [str(_folder_of_images(tmp_path / "in", 4))]
    config = PredictConfig(output=str(tmp_path / "out"), streams=2)
    with pytest.raises(RuntimeError, match="a bug in the network"):
        predict_files(segmenter, inputs, config, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------- two writers of one mask
def test_the_second_writer_of_a_mask_says_it_lost(tmp_path: Path, monkeypatch) -> None:
    """Issue 13 §2: another predict writes the same mask while this one runs. Its file stays
    as it is and this run says why it wrote nothing."""
    from support.hashes import sha256

    import deeplabcli.prediction.pipeline as pipeline
    from deeplabcli.config import PredictConfig

    source = save(tmp_path / "a.jpg", rgb())
    target = tmp_path / "masks" / "a.png"
    theirs: list[str] = []

    def read_meanwhile(path, *args, **kwargs):
        save(target, rgb(seed=7), format="PNG")  # the other process gets there first
        theirs.append(sha256(target))
        return read_image(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "read_image", read_meanwhile)
    torch.manual_seed(0)
    config = PredictConfig(output=str(target), device="cpu")
    summary = pipeline.predict_files(build_model("deeplabv3_tiny"), [str(source)], config,
                                     progress=False)  # fmt: skip
    assert (summary.written, summary.skipped, summary.failed) == (0, 1, 0)
    assert summary.results[0].message == (
        f"{target}: written by another process while this one ran, not replaced. Use "
        "--overwrite to replace it."
    )
    assert [sha256(target)] == theirs
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]  # no temporary left
