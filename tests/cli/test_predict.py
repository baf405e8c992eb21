"""``deeplab predict`` through the CLI: every option, every bad input, and real VOC data."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deeplabcli import VOC_CLASSES, build_model
from deeplabcli.cli import main
from deeplabcli.data.palette import voc_palette
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.weights.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(checkpoint folder, model) of a random deeplabv3_tiny."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny"), model


def photo(path: Path, height: int = 30, width: int = 40, seed: int = 0, **kwargs) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, **kwargs)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def segment(model, path: Path, **options) -> np.ndarray:
    return Segmenter(model, device="cpu", **options).predict(path)


# ---------------------------------------------------------------------- outputs and formats
def test_one_photo_to_a_palette_mask(tmp_path: Path, tiny) -> None:
    ckpt, model = tiny
    src = photo(tmp_path / "photo.jpg")
    # --backend torch: the mask is compared bit for bit with the torch Segmenter's
    code, out, err = run(str(src), "-o", str(tmp_path / "mask.png"), "--model", str(ckpt),
                         "--backend", "torch")  # fmt: skip
    assert code == 0, err
    mask = Image.open(tmp_path / "mask.png")
    assert mask.mode == "P" and mask.size == (40, 30)
    assert mask.getpalette()[: 3 * 256] == voc_palette().ravel().tolist()
    assert np.array_equal(np.asarray(mask), segment(model, src))
    assert out == ""
    assert re.fullmatch(r"Wrote 1 mask in \d+\.\d s \(\d+\.\d\d images/s\)\.", lines(err)[-1])


def test_palette_and_index_masks_hold_the_same_classes(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    src = photo(tmp_path / "in" / "a.png", 33, 47)
    for fmt in ("palette", "index"):
        code, _, err = run(
            str(src), "-o", str(tmp_path / fmt), "--format", fmt, "--model", str(ckpt)
        )
        assert code == 0, err
    palette = Image.open(tmp_path / "palette" / "a.png")
    index = Image.open(tmp_path / "index" / "a.png")
    assert (palette.mode, index.mode) == ("P", "L")
    assert np.array_equal(np.asarray(palette), np.asarray(index))


def test_overlay_has_the_photo_size_plus_a_legend(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    src = photo(tmp_path / "a.jpg", 60, 90)
    code, _, err = run(str(src), "--format", "overlay", "--model", str(ckpt), "-q")
    assert code == 0, err
    overlay = Image.open(tmp_path / "a_mask.png")
    assert overlay.mode == "RGB" and overlay.width == 90 and overlay.height > 60


def test_folders_mirror_into_the_output_folder(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    root = tmp_path / "JPEGImages"
    for name in ("2007_000033.jpg", "sub/x.png", "sub/deeper/y.bmp"):
        photo(root / name)
    (root / "list.txt").write_text("not an image")
    code, _, err = run(str(root), "-o", str(tmp_path / "out"), "--model", str(ckpt))
    assert code == 0, err
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    assert written == ["2007_000033.png", "sub", "sub/deeper", "sub/deeper/y.png", "sub/x.png"]
    assert "Wrote 3 masks" in err


def test_without_output_masks_go_next_to_their_images(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    a, b = photo(tmp_path / "a.jpg"), photo(tmp_path / "d" / "b.png")
    code, _, err = run(str(a), str(b), "--model", str(ckpt))
    assert code == 0, err
    assert (tmp_path / "a_mask.png").is_file() and (tmp_path / "d" / "b_mask.png").is_file()
    code, _, err = run(str(tmp_path), "--model", str(ckpt))  # earlier masks are not inputs
    assert code == 0 and "2 skipped" in err


def test_globs(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    photo(tmp_path / "a" / "1.jpg")
    photo(tmp_path / "a" / "b" / "2.jpg")
    photo(tmp_path / "a" / "3.png")
    code, _, err = run(f"{tmp_path}/a/**/*.jpg", "-o", str(tmp_path / "out"), "--model", str(ckpt))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["1.png", "2.png"]
    assert (tmp_path / "out" / "b" / "2.png").is_file()


# ---------------------------------------------------------------------- inference options
def test_os_scales_and_flip_reach_the_engine(tmp_path: Path, tiny) -> None:
    ckpt, model = tiny
    src = photo(tmp_path / "a.png", 41, 55, seed=2)
    options = [
        (["--os", "8"], {"output_stride": 8}),
        (["--scales", "0.5,1,1.5", "--flip"], {"scales": (0.5, 1.0, 1.5), "flip": True}),
    ]
    for args, kwargs in options:
        target = tmp_path / f"{len(args)}.png"
        code, _, err = run(str(src), "-o", str(target), "--format", "index", "--model",
                           str(ckpt), "--backend", "torch", *args)  # fmt: skip
        assert code == 0, err
        assert np.array_equal(np.asarray(Image.open(target)), segment(model, src, **kwargs))
    assert model.output_stride == 16


def test_batch_size_streams_and_device_do_not_change_results(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    for i in range(5):
        photo(tmp_path / "in" / f"{i}.png", 30 + 5 * (i % 2), 40, seed=i)
    results = {}
    for args in (
        ["--batch-size", "1", "--device", "auto", "--streams", "1"],
        ["--batch-size", "3", "--device", "cpu", "--streams", "2"],
    ):
        out = tmp_path / args[1]
        code, _, err = run(
            str(tmp_path / "in"), "-o", str(out), "--format", "index", "--model", str(ckpt), *args
        )
        assert code == 0, err
        results[args[1]] = {p.name: np.asarray(Image.open(p)) for p in out.iterdir()}
    assert results["1"].keys() == results["3"].keys() and len(results["1"]) == 5
    for name, mask in results["1"].items():
        assert (mask == results["3"][name]).mean() > 0.999


def test_json_records(tmp_path: Path, tiny) -> None:
    ckpt, model = tiny
    src = photo(tmp_path / "a.jpg", 20, 30)
    code, out, _ = run(
        str(src),
        str(tmp_path / "missing.jpg"),
        "-o",
        str(tmp_path / "o"),
        "--json",
        "--model",
        str(ckpt),
        "--backend",
        "torch",  # the class shares are compared exactly with the torch Segmenter's
    )
    assert code == 1
    records = {r["status"]: r for r in map(json.loads, lines(out))}
    written = records["written"]
    assert written["input"] == str(src) and written["output"] == str(tmp_path / "o" / "a.png")
    assert (written["width"], written["height"]) == (30, 20)
    assert written["seconds"] >= 0
    mask = segment(model, src)
    shares = {c["name"]: c["share"] for c in written["classes"]}
    for c in np.unique(mask):
        assert shares[VOC_CLASSES[c]] == round(float((mask == c).mean()), 6)
    assert abs(sum(shares.values()) - 1) < 1e-4
    assert records["failed"] == {
        "input": str(tmp_path / "missing.jpg"),
        "status": "failed",
        "message": f"{tmp_path / 'missing.jpg'}: no such file or directory. Check the path.",
    }


def test_existing_outputs_are_kept_unless_overwrite(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    src = photo(tmp_path / "a.jpg")
    target = tmp_path / "mask.png"
    target.write_bytes(b"keep me")
    code, _, err = run(str(src), "-o", str(target), "--model", str(ckpt))
    assert code == 0
    assert lines(err) == [
        f"Skipped {target}: already exists, not replaced. Use --overwrite to replace it.",
        "Wrote 0 masks in "
        + err.split("Wrote 0 masks in ")[1].split(" s")[0]
        + " s; 1 skipped (already exist; --overwrite replaces them).",
    ]
    assert target.read_bytes() == b"keep me"
    code, _, err = run(str(src), "-o", str(target), "--model", str(ckpt), "--overwrite", "-q")
    assert code == 0 and err == ""
    assert Image.open(target).size == (40, 30)


def test_quiet_prints_nothing_on_success(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    photo(tmp_path / "a.jpg")
    photo(tmp_path / "b.jpg")
    code, out, err = run(str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(ckpt), "--quiet")
    assert (code, out, err) == (0, "", "")


def test_option_errors(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    src = str(photo(tmp_path / "a.jpg"))
    code, _, err = run(src, "--scales", "1,x", "--model", str(ckpt))
    assert code == 2
    assert lines(err)[-1] == (
        "Error: Invalid value for '--scales': '1,x' is not a comma-separated list of numbers, "
        "e.g. 0.5,1,1.5."
    )
    code, _, err = run(src, "--scales", "0,1", "--model", str(ckpt))
    assert code == 2 and "has a scale that is not positive" in err
    code, _, err = run(src, "--batch-size", "0", "--model", str(ckpt))
    assert code == 2 and "--batch-size" in err
    code, _, err = run(src, "--streams", "0", "--model", str(ckpt))
    assert code == 2 and "Invalid value for '--streams'" in err
    code, _, err = run(src, "src.png", "-o", str(tmp_path / "m.png"), "--model", str(ckpt))
    assert (code, lines(err)) == (1, [
        f"Error: -o {tmp_path / 'm.png'} names one file but the inputs are several images, a "
        "folder or a pattern. Give -o a folder."
    ])  # fmt: skip
    code, _, err = run(src, "--model", str(tmp_path / "nope"))
    assert (code, lines(err)) == (1, [
        f"Error: {tmp_path / 'nope'} does not exist. Check the path, or run `deeplab models` "
        "for model names."
    ])  # fmt: skip
    if not torch.cuda.is_available():
        code, _, err = run(src, "--device", "cuda", "--model", str(ckpt))
        assert (code, lines(err)) == (
            1,
            ["Error: CUDA is not available on this machine. Use --device cpu or auto."],
        )


def test_default_model_works_offline_and_a_hub_model_fails_cleanly(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(str(photo(tmp_path / "a.jpg")), "-q")  # the embedded default model
    assert (code, err) == (0, "")
    with Image.open(tmp_path / "a_mask.png") as mask:
        assert mask.mode == "P" and mask.size == (40, 30)
    code, _, err = run(str(tmp_path / "a.jpg"), "--model", "deeplabv3-resnet50-voc", "-q")
    assert code == 1
    assert len(lines(err)) == 1 and err.startswith("Error: ") and "offline" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- bad inputs
def bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is text")
    data = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(data, format="JPEG")
    (folder / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    photo(folder / "huge.png", 50, 60)  # above the limit the test sets
    return {name: folder / name for name in ("empty.jpg", "notes.png", "truncated.jpg", "huge.png")}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_are_reported_and_the_rest_still_processed(tmp_path, monkeypatch, tiny) -> None:
    ckpt, _ = tiny
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2500)
    bad = bad_inputs(tmp_path / "in")
    good = [photo(tmp_path / "in" / "good1.jpg"), photo(tmp_path / "in" / "good2.png", seed=1)]
    (tmp_path / "nothing").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.txt").write_text("no images here")
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), str(tmp_path / "missing.jpg"), str(tmp_path / "nothing"),
            str(tmp_path / "texts"), str(tmp_path / "in" / "notes.png")]  # fmt: skip
    code, stdout, err = run(*args, "-o", str(out), "--model", str(ckpt))
    assert code == 1 and stdout == ""
    folder_hint = "Give a folder of image files (.jpg, .png, .bmp, .tif, .webp, ...)."
    expected = [
        f"Error: {tmp_path / 'missing.jpg'}: no such file or directory. Check the path.",
        f"Error: {tmp_path / 'nothing'}: no images in this folder. {folder_hint}",
        f"Error: {tmp_path / 'texts'}: no images in this folder. {folder_hint}",
        f"Error: {bad['empty.jpg']}: file is empty (0 bytes). Re-copy or re-download the image.",
        f"Error: {bad['huge.png']}: image is too large (60×50 = 3,000 pixels, above Pillow's "
        "decompression-bomb limit of 2,500). Downscale it first.",
        f"Error: {bad['notes.png']}: not an image (unknown format). Give a JPEG, PNG, BMP, TIFF "
        "or WebP file.",
    ]
    truncated = re.compile(
        re.escape(f"Error: {bad['truncated.jpg']}: image is truncated or corrupt: ")
        + r".+\. Re-copy or re-download the image\."  # Pillow's detail varies
    )
    got = [line for line in lines(err) if line.startswith("Error: ")]
    assert [bool(truncated.fullmatch(line)) for line in got].count(True) == 1
    assert sorted(line for line in got if not truncated.fullmatch(line)) == sorted(expected)
    assert re.fullmatch(
        r"Wrote 2 masks in [\d.]+ s \([\d.]+ images/s\); 7 failed\.", lines(err)[-1]
    )
    assert sorted(p.name for p in out.iterdir()) == ["good1.png", "good2.png"]  # nothing else
    for path in good:
        assert Image.open(out / f"{path.stem}.png").size == (40, 30)


def test_an_unwritable_output_location_fails_that_image_only(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    a = photo(tmp_path / "in" / "a.jpg")
    photo(tmp_path / "in" / "sub" / "b.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where a folder should be")
    code, _, err = run(str(tmp_path / "in"), "-o", str(out), "--model", str(ckpt))
    assert code == 1
    b_out = out / "sub" / "b.png"
    assert [line for line in lines(err) if line.startswith("Error: ")] == [
        f"Error: {tmp_path / 'in' / 'sub' / 'b.jpg'}: cannot write {b_out} (Not a directory). "
        "Choose a writable output location with -o."
    ]
    assert "1 failed" in lines(err)[-1]
    assert (out / "a.png").is_file() and a.is_file()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "sub"]  # no temporary files


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_folder_without_output_fails_its_images(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    photo(tmp_path / "ok" / "a.jpg")
    locked = photo(tmp_path / "locked" / "b.jpg")
    locked.parent.chmod(0o555)
    try:
        code, _, err = run(str(tmp_path / "ok"), str(locked), "--model", str(ckpt))
    finally:
        locked.parent.chmod(0o755)
    assert code == 1
    assert (
        f"Error: {locked}: cannot write {tmp_path / 'locked' / 'b_mask.png'} (Permission denied)"
        in err
    )
    assert (tmp_path / "ok" / "a_mask.png").is_file()


# ---------------------------------------------------------------------- torchrun
@pytest.mark.distributed
def test_torchrun_writes_each_output_exactly_once(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    for i in range(7):
        photo(tmp_path / "in" / f"{i}.jpg", seed=i)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "deeplabcli", "predict", str(tmp_path / "in"),
               "-o", str(tmp_path / "out"), "--model", str(ckpt), "--json", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    written = [r["output"] for r in records if r["status"] == "written"]
    assert sorted(written) == sorted(str(tmp_path / "out" / f"{i}.png") for i in range(7))
    assert [r["input"] for r in records if r["status"] == "failed"] == [
        str(tmp_path / "in" / "bad.jpg")
    ]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        f"Error: {tmp_path / 'in' / 'bad.jpg'}: file is empty (0 bytes). Re-copy or re-download "
        "the image."
    ]
    assert "Wrote 7 masks" in done.stderr and "1 failed" in done.stderr
    assert done.returncode != 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}.png" for i in range(7)]


# ---------------------------------------------------------------------- real data
def voc_val_ids(voc_root: Path) -> list[str]:
    return (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()


def google_tflite_masks(model_path: Path, images: list[Path]) -> list[np.ndarray]:
    """Google's own runtime with Google's preprocessing (the DeepLab demo): long side resized to
    513 with bilinear filtering, padded right/bottom with 128 (the mean, 0.0 after the model's
    input quantisation), the ArgMax output cropped to the image and resized back (nearest)."""
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(model_path=str(model_path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    side = int(inp["shape"][1])
    masks = []
    for path in images:
        image = Image.open(path).convert("RGB")
        width, height = image.size
        ratio = side / max(width, height)
        size = (round(width * ratio), round(height * ratio))
        canvas = np.full((side, side, 3), 128, np.uint8)
        canvas[: size[1], : size[0]] = np.asarray(image.resize(size, Image.BILINEAR))
        interpreter.set_tensor(inp["index"], canvas[None])
        interpreter.invoke()
        labels = interpreter.get_tensor(out["index"])[0, : size[1], : size[0]].astype(np.uint8)
        masks.append(np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST)))
    return masks


def miou(masks: list[np.ndarray], labels: list[Path]) -> float:
    from deeplabcli.evaluation.metrics import compute_metrics, confusion_matrix

    total = np.zeros((21, 21), np.int64)
    for mask, label in zip(masks, labels, strict=True):
        total += confusion_matrix(np.asarray(Image.open(label)), mask, 21)
    return compute_metrics(total).miou


def check_quant_model_on_voc(tmp_path: Path, voc_root: Path, model_path: Path, count: int):
    ids = voc_val_ids(voc_root)[:count]
    images = [voc_root / "JPEGImages" / f"{i}.jpg" for i in ids]
    labels = [voc_root / "SegmentationClass" / f"{i}.png" for i in ids]
    out = tmp_path / "masks"
    code, _, err = run(
        *map(str, images), "-o", str(out), "--format", "index", "--model", str(model_path), "-q"
    )
    assert code == 0, err
    ours = [np.asarray(Image.open(out / f"{i}.png")) for i in ids]
    assert all(
        m.shape == np.asarray(Image.open(p)).shape for m, p in zip(ours, labels, strict=True)
    )
    reference = miou(google_tflite_masks(model_path, images), labels)
    ours_miou = miou(ours, labels)
    print(f"{count} VOC val images: ours {ours_miou:.4f}, Google's TFLite runtime {reference:.4f}")
    assert ours_miou >= reference - 0.01


def test_quant_tflite_model_on_20_voc_val_images(tmp_path, voc_root, tflite_quant_path) -> None:
    check_quant_model_on_voc(tmp_path, voc_root, tflite_quant_path, 20)


@pytest.mark.slow
def test_quant_tflite_model_on_all_120_voc_val_images(
    tmp_path, voc_root, tflite_quant_path
) -> None:
    check_quant_model_on_voc(tmp_path, voc_root, tflite_quant_path, 120)


# ---------------------------------------------------------------------- inputs are never outputs
def test_an_input_is_never_replaced_by_another_inputs_mask(tmp_path: Path, tiny) -> None:
    """Issue 13 §1: `predict q/x.jpg q/x.png -o q --overwrite` replaced the photo q/x.png."""
    from support.hashes import tree_hashes

    ckpt, _ = tiny
    q = tmp_path / "q"
    jpg, png = photo(q / "x.jpg"), photo(q / "x.png", seed=1)
    before = tree_hashes(q)
    for flags in (("--overwrite",), ()):
        code, out, err = run(str(jpg), str(png), "-o", str(q), "--model", str(ckpt), *flags)
        assert code == 1 and out == ""
        assert [line for line in lines(err) if line.startswith("Error:")] == [
            f"Error: {jpg}: its mask {q / 'x.png'} would replace the input {png}, which is never "
            "overwritten. Choose another output location with -o.",
            f"Error: {png}: its mask would replace the image itself. Choose another output "
            "location with -o.",
        ]
        assert tree_hashes(q) == before


def test_a_mask_name_that_is_an_input_is_not_written(tmp_path: Path, tiny) -> None:
    """Issue 13 §1: `predict q2/a.jpg q2/a_mask.png --overwrite` overwrote a_mask.png silently."""
    from support.hashes import sha256

    ckpt, _ = tiny
    q2 = tmp_path / "q2"
    a, mask = photo(q2 / "a.jpg"), photo(q2 / "a_mask.png", seed=1)
    before = {a: sha256(a), mask: sha256(mask)}
    code, _, err = run(str(a), str(mask), "--overwrite", "--model", str(ckpt))
    assert code == 1
    assert [line for line in lines(err) if line.startswith("Error:")] == [
        f"Error: {a}: its mask {mask} would replace the input {mask}, which is never "
        "overwritten. Choose another output location with -o."
    ]
    assert {path: sha256(path) for path in before} == before
    assert sorted(p.name for p in q2.iterdir()) == ["a.jpg", "a_mask.png", "a_mask_mask.png"]


def test_a_second_run_over_a_folder_never_segments_its_own_masks(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    photo(tmp_path / "photos" / "a.jpg")
    photo(tmp_path / "photos" / "sub" / "b.png", seed=1)
    folder = str(tmp_path / "photos")

    def files() -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(Path(folder).rglob("*")) if p.is_file()}  # fmt: skip

    assert run(folder, "--model", str(ckpt), "-q")[0] == 0
    first = files()
    assert sorted(first) == ["a.jpg", "a_mask.png", "sub/b.png", "sub/b_mask.png"]
    code, _, err = run(folder, "--model", str(ckpt))
    assert code == 0
    assert files() == first  # no a_mask_mask.png, nothing rewritten
    assert lines(err)[-1].startswith("Wrote 0 masks in ")
    assert lines(err)[-1].endswith("; 2 skipped (already exist; --overwrite replaces them).")
    code, _, _ = run(folder, "--model", str(ckpt), "--overwrite", "--format", "overlay", "-q")
    assert code == 0 and sorted(files()) == sorted(first)  # overlays too: still 2 masks


# ---------------------------------------------------------------------- issue 13: limits, FIFOs
def test_a_scale_too_large_for_an_image_fails_that_image_and_the_batch_goes_on(
    tmp_path: Path, tiny
) -> None:
    """`--scales 1,100` on a 64×48 photo would ask for a 6400×4800 input: that image fails with
    the limit in its line; a small one in the same batch is segmented at the same scales."""
    ckpt, model = tiny
    big = photo(tmp_path / "in" / "big.png", 48, 64, seed=1)
    small = photo(tmp_path / "in" / "small.png", 4, 5, seed=2)
    before = {p: p.read_bytes() for p in (big, small)}
    code, _, err = run(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--scales", "1,100",
                       "--batch-size", "2", "--model", str(ckpt), "--backend", "torch")  # fmt: skip
    assert code == 1
    assert [line for line in lines(err) if line.startswith("Error:")] == [
        f"Error: {big}: scale 100 makes a 6400×4800 network input (30,720,000 pixels) for the "
        "64×48 image, above the limit of 16,777,216 pixels (4096×4096). Use --scales of at most "
        "73.89 for it."
    ]
    assert lines(err)[-1].startswith("Wrote 1 mask in ") and lines(err)[-1].endswith("; 1 failed.")
    with Image.open(tmp_path / "out" / "small.png") as mask:
        np.testing.assert_array_equal(np.array(mask), segment(model, small, scales=(1.0, 100.0)))
    assert not (tmp_path / "out" / "big.png").exists()
    assert {p: p.read_bytes() for p in (big, small)} == before
    code, _, err = run(str(big), "--scales", "inf", "--model", str(ckpt))  # no OverflowError
    assert (code, lines(err)) == (1, ["Error: scales must be finite numbers. Fix the prediction "
                                      "option."])  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_a_named_pipe_input_is_named_as_such(tmp_path: Path, tiny) -> None:
    ckpt, _ = tiny
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run(str(fifo), "-o", str(tmp_path / "mask.png"), "--model", str(ckpt))
    assert code == 1
    assert lines(err)[0] == (
        f"Error: {fifo}: a named pipe (FIFO), not an image file. Save the image to a file and "
        "give that."
    )
    assert not (tmp_path / "mask.png").exists()
    code, _, err = run(str(tmp_path / "gone.jpg"), "-o", str(tmp_path / "m.png"), "--model",
                       str(ckpt))  # fmt: skip
    assert code == 1 and lines(err)[0] == (
        f"Error: {tmp_path / 'gone.jpg'}: no such file or directory. Check the path."
    )
