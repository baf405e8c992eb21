"""Videos through ``deeplab predict``: a real-photo clip in, masks out (a video at the source's
rate and size, or per-frame PNGs), each frame as ``deeplab predict`` segments it as an image;
broken, truncated and unwritable cases as one ``Error:`` line each, the other inputs still done."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deeplabcli import build_model
from deeplabcli.cli import main
from deeplabcli.data.palette import voc_palette
from deeplabcli.weights.checkpoint import save_checkpoint

av = pytest.importorskip("av", reason='PyAV is not installed (pip install "deeplabcli[video]")')

RATE = Fraction(30000, 1001)  # NTSC: a rate that is not a whole number
SIZE = (60, 84)  # (H, W)
FRAMES = 9


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny")


def write_clip(
    path: Path, photos: Path, *, codec: str = "libx264", frames: int = FRAMES, faststart=False
) -> Path:
    """A short video of the real photos (resized to SIZE, panning a little), written with PyAV;
    ``faststart``: the MP4 index first (a cut file then still opens, and fails mid-stream)."""
    pictures = [Image.open(p).convert("RGB") for p in sorted(photos.iterdir())]
    height, width = SIZE
    options: dict = {"format": "matroska"} if path.suffix == ".mkv" else {}
    if faststart:
        options["options"] = {"movflags": "faststart"}
    with av.open(str(path), "w", **options) as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv420p" if codec == "libx264" else "bgr0"
        for i in range(frames):
            picture = pictures[i % len(pictures)]
            crop = picture.crop((i, i, picture.width - i, picture.height - i)).resize(
                (width, height)
            )
            frame = av.VideoFrame.from_ndarray(np.asarray(crop), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(path: Path, fmt: str = "rgb24") -> tuple[list[np.ndarray], Fraction, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format=fmt) for f in container.decode(stream)]
        return frames, stream.average_rate, (stream.height, stream.width)


@pytest.fixture
def clip(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", photos_dir)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def image_masks(tmp_path: Path, clip: Path, ckpt: Path) -> list[np.ndarray]:
    """``deeplab predict --format index`` on each decoded frame of ``clip``, saved as PNG."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(decode(clip)[0]):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    code, _, err = run(str(folder), "-o", str(tmp_path / "image_masks"), "--format", "index",
                       "--model", str(ckpt), "-q")  # fmt: skip
    assert code == 0, err
    return [np.asarray(Image.open(p)) for p in sorted((tmp_path / "image_masks").iterdir())]


# ---------------------------------------------------------------------- a video in, masks out
def test_index_video_matches_predict_on_each_frame(tmp_path: Path, clip: Path, ckpt: Path) -> None:
    expected = image_masks(tmp_path, clip, ckpt)
    assert len(expected) == FRAMES
    for out in (tmp_path / "masks.mkv", tmp_path / "masks.mp4"):  # FFV1; lossless H.264 RGB
        code, stdout, err = run(str(clip), "-o", str(out), "--format", "index", "--model",
                                str(ckpt), "--json")  # fmt: skip
        assert code == 0, err
        record = json.loads(stdout)
        assert record["status"] == "written" and record["frames"] == FRAMES
        assert (record["height"], record["width"]) == SIZE
        assert re.fullmatch(r"Wrote 1 mask in [\d.]+ s \(9 video frames, [\d.]+/s\)\.",
                            err.splitlines()[-1])  # fmt: skip
        frames, rate, size = decode(out, "gray" if out.suffix == ".mkv" else "rgb24")
        assert (len(frames), rate, size) == (FRAMES, RATE, SIZE)
        for got, want in zip(frames, expected, strict=True):
            assert np.array_equal(got if got.ndim == 2 else got[..., 0], want)
            if got.ndim == 3:  # the index in all three channels
                assert np.array_equal(got[..., 1], want) and np.array_equal(got[..., 2], want)


def test_palette_and_overlay_videos_keep_rate_and_size(tmp_path: Path, clip: Path, ckpt: Path):
    expected = image_masks(tmp_path, clip, ckpt)
    palette = voc_palette()
    code, _, err = run(str(clip), "-o", str(tmp_path / "p.mkv"), "--model", str(ckpt))
    assert code == 0, err
    frames, rate, size = decode(tmp_path / "p.mkv")
    assert (len(frames), rate, size) == (FRAMES, RATE, SIZE)
    for got, want in zip(frames, expected, strict=True):
        assert np.array_equal(got, palette[want])  # lossless colours
    code, _, err = run(str(clip), "-o", str(tmp_path / "o.mp4"), "--format", "overlay",
                       "--model", str(ckpt))  # fmt: skip
    assert code == 0, err
    frames, rate, size = decode(tmp_path / "o.mp4")
    assert (len(frames), rate, size) == (FRAMES, RATE, SIZE)  # no legend strip in a video
    source = decode(clip)[0]
    assert np.abs(frames[0].astype(int) - source[0].astype(int)).mean() < 60  # the photo shows
    # without -o: next to the video, lossless masks as .mkv, overlays as .mp4
    code, _, err = run(str(clip), "--model", str(ckpt), "-q", "--format", "overlay")
    assert code == 0, err
    assert (clip.parent / "clip_mask.mp4").is_file()
    (clip.parent / "clip_mask.mp4").unlink()


def test_frames_dir_writes_the_png_masks_of_predict(tmp_path: Path, clip: Path, ckpt: Path):
    expected = image_masks(tmp_path, clip, ckpt)
    code, _, err = run(str(clip), "--frames-dir", str(tmp_path / "fr"), "--format", "index",
                       "--model", str(ckpt))  # fmt: skip
    assert code == 0, err
    files = sorted((tmp_path / "fr" / "clip").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(FRAMES)]
    for file, want in zip(files, expected, strict=True):
        assert np.array_equal(np.asarray(Image.open(file)), want)
    # again without --overwrite: skipped, nothing touched
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    code, _, err = run(str(clip), "--frames-dir", str(tmp_path / "fr"), "--format", "palette",
                       "--model", str(ckpt))  # fmt: skip
    assert code == 0 and f"Skipped {tmp_path / 'fr' / 'clip'}: already exists" in err
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == digest


def test_an_existing_video_is_kept_unless_overwrite(tmp_path: Path, clip: Path, ckpt: Path):
    out = tmp_path / "out.mkv"
    out.write_bytes(b"someone else's file")
    code, _, err = run(str(clip), "-o", str(out), "--model", str(ckpt))
    assert code == 0 and out.read_bytes() == b"someone else's file"
    assert f"Skipped {out}: already exists, not replaced. Use --overwrite to replace it." in err
    code, _, err = run(str(clip), "-o", str(out), "--model", str(ckpt), "--overwrite")
    assert code == 0 and len(decode(out)[0]) == FRAMES


# ---------------------------------------------------------------------- bad videos, bad options
def test_broken_truncated_and_unwritable_videos_fail_alone(
    tmp_path: Path, photos_dir: Path, ckpt: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    fake = inputs / "notes.mp4"
    fake.write_text("this is not a video")
    image_as_video = inputs / "still.mp4"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image_as_video, format="PNG")
    whole = write_clip(inputs / "long.mkv", photos_dir, codec="ffv1", frames=24)
    cut = inputs / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    good = inputs / "good.png"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(good)
    out = tmp_path / "out"
    out.mkdir()
    (out / "long.mkv").mkdir()  # a folder where the video should go: unwritable
    code, stdout, err = run(str(fake), str(image_as_video), str(cut), str(whole), str(good),
                            "-o", str(out), "--model", str(ckpt), "--json")  # fmt: skip
    assert code == 1
    lines = errors(err)
    assert lines[:2] == [
        f"Error: {fake}: not a video that can be read (Invalid data found when processing "
        "input). Give a video file (.mp4, .mkv, .mov, .avi, .webm, ...).",
        f"Error: {image_as_video}: an image (png), not a video. Predict images under their own "
        "suffix (.png, .jpg, ...), and give videos with a video stream.",
    ]
    truncated = re.fullmatch(
        re.escape(f"Error: {cut}: the video ends early: ")
        + r"(\d+) of 24 frames could be decoded; the masks of those \1 frames were written to "
        + re.escape(f"{out / 'cut.mkv'}. Re-copy or re-encode the video to segment all of it."),
        lines[2],
    )
    assert truncated, lines[2]
    written = int(truncated[1])
    assert 0 < written < 24
    assert lines[3:] == [
        f"Error: {whole}: cannot write {out / 'long.mkv'} (Is a directory). Choose a writable "
        "output location with -o."
    ]
    frames, rate, size = decode(out / "cut.mkv")  # the frames before the break, as a video
    assert (len(frames), rate, size) == (written, RATE, SIZE)
    assert (out / "good.png").is_file()  # the image still ran
    assert re.fullmatch(rf"Wrote 1 mask in [\d.]+ s \({written} video frames, [\d.]+/s\); "
                        r"4 failed\.", err.splitlines()[-1])  # fmt: skip
    records = {Path(r["input"]).name: r for r in map(json.loads, stdout.splitlines())}
    assert records["cut.mkv"]["status"] == "failed" and records["cut.mkv"]["frames"] == written
    assert sorted(p.name for p in out.iterdir()) == ["cut.mkv", "good.png", "long.mkv"]
    assert not any((out / "long.mkv").iterdir())  # no temporaries left anywhere


def test_an_mp4_cut_mid_way_ends_early_against_its_frame_count(
    tmp_path: Path, photos_dir: Path
) -> None:
    from deeplabcli.prediction.video_io import VideoReader

    whole = write_clip(tmp_path / "whole.mp4", photos_dir, frames=24, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    complete = VideoReader(whole)
    assert (complete.expected, complete.rate, complete.size) == (24, RATE, SIZE)
    assert len(list(complete.frames())) == 24 and not complete.ended_early(24)
    complete.close()
    reader = VideoReader(cut)
    assert reader.expected == 24  # the index at the front still counts them all
    decoded = len(list(reader.frames()))
    reader.close()
    assert 0 < decoded < 24
    assert reader.ended_early(decoded)  # FFmpeg may stop silently or with an error here


def test_video_option_errors(tmp_path: Path, clip: Path, ckpt: Path) -> None:
    model = ["--model", str(ckpt)]
    for args, message in (
        (["--format", "probs"], "videos are written as overlay, palette or index masks, not "
         "--format probs. Choose one of those for video inputs."),
        (["-o", str(tmp_path / "o.avi")], "videos are written as .mp4, .mov (H.264) or .mkv "
         "(lossless FFV1), not .avi. Give -o one of those names or a folder, or use "
         "--frames-dir for PNG frames."),
        (["-o", str(tmp_path / "o.png")], "videos are written as .mp4, .mov (H.264) or .mkv "
         "(lossless FFV1), not .png. Give -o one of those names or a folder, or use "
         "--frames-dir for PNG frames."),
        (["-o", str(tmp_path / "o.mp4"), "--frames-dir", str(tmp_path / "f")],
         f"-o {tmp_path / 'o.mp4'} names a video but --frames-dir writes the frames as PNGs "
         "instead. Give one of them."),
        ([str(clip), "-o", str(tmp_path / "o.mp4")], f"-o {tmp_path / 'o.mp4'} names one file "
         "but the inputs are several. Give -o a folder."),
    ):  # fmt: skip
        code, out, err = run(str(clip), *args, *model)
        assert (code, out, errors(err)) == (1, "", [f"Error: {message}"]), err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_without_pyav_a_video_is_one_error_naming_the_extra(
    tmp_path: Path, clip: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    code, out, err = run(str(clip), "-o", str(tmp_path / "o.mkv"), "--model", str(ckpt))
    assert (code, out, err.splitlines()) == (1, "", [
        "Error: reading and writing videos needs PyAV, which is not installed. Install it from "
        'the deeplabcli checkout with pip install ".[video]" (pipx: pipx inject deeplabcli av; '
        'from PyPI once published: pip install "deeplabcli[video]").'
    ])  # fmt: skip
    assert not (tmp_path / "o.mkv").exists()
