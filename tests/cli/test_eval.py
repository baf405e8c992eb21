"""``deeplab eval`` through the CLI: output, options, and every data set mistake as one line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.data_builders import make_folder, make_voc, save_image, save_mask

from deeplabcli import build_model, load_model
from deeplabcli.cli import main
from deeplabcli.data import FolderDataset
from deeplabcli.evaluation.protocol import evaluate_dataset
from deeplabcli.weights.checkpoint import save_checkpoint

REQUIRED = {"miou", "pixel_accuracy", "mean_accuracy", "fw_iou", "per_class_iou", "images",
            "model", "os", "scales", "flip", "backend"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-class deeplabv3_tiny checkpoint (the folder data sets have 3 classes)."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=3).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny3")


@pytest.fixture(scope="module")
def tiny21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=21).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny21")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "ds", [f"im{i}" for i in range(6)])


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["eval", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def fails_with(message: str, *args: str) -> str:
    """Run, expect exit code 1 and ``Error: <message>`` as the one error line; no traceback."""
    code, out, err = run(*args)
    assert code == 1, err
    assert errors(err) == [f"Error: {message}"], err
    assert "Traceback" not in err and out == ""
    return err


# ---------------------------------------------------------------------- results
def test_json_and_table(folder: Path, tiny3: Path) -> None:
    code, out, err = run("--dataset", "folder", "--data-root", str(folder), "--model",
                         str(tiny3), "--json", "--workers", "0", "--backend", "torch")  # fmt: skip
    assert code == 0, err  # (torch: the metrics are compared exactly with the library's)
    record = json.loads(out)
    assert set(record) >= REQUIRED and record["backend"] == "torch"
    expected = evaluate_dataset(load_model(tiny3), FolderDataset(folder), device="cpu").metrics
    assert record["miou"] == pytest.approx(expected.miou, abs=1e-12)
    assert record["per_class_iou"] == expected.to_dict()["per_class_iou"]
    assert (record["images"], record["model"], record["os"]) == (6, str(tiny3), 16)
    assert (record["scales"], record["flip"], record["split"]) == ([1.0], False, "all")
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "fw_iou"):
        assert 0.0 <= record[key] <= 1.0
    assert "Per-class IoU — folder all, 6 images" in err and "mIoU %" in err
    assert "background" in err and "images/s" in err


def test_absent_classes_are_marked_na_and_left_out_of_the_mean(tmp_path, tiny3) -> None:
    root = make_folder(tmp_path / "ds", [])
    save_image(root / "images" / "a.png", np.zeros((16, 16, 3), np.uint8))
    save_mask(root / "masks" / "a.png", np.zeros((16, 16), np.uint8), "L")
    model = build_model("deeplabv3_tiny", num_classes=3).eval()
    with torch.no_grad():  # predicts background everywhere
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    ckpt = save_checkpoint(model, tmp_path / "bg")
    code, out, err = run("--dataset", "folder", "--data-root", str(root), "--model", str(ckpt),
                         "--json")  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["miou"] == 1.0 and record["absent_classes"] == ["cat", "dog"]
    assert record["per_class_iou"] == {"background": 1.0, "cat": None, "dog": None}
    assert "n/a" in err
    note = " ".join(err.split())  # rich may wrap the note
    assert "n/a: cat, dog — in neither the labels nor the predictions" in note
    assert "excluded from the mean (1 of 3 classes averaged)" in note


def test_protocol_options_reach_the_engine(tmp_path: Path, tiny21: Path) -> None:
    voc = make_voc(tmp_path, {"val": ["a", "b", "c", "d"], "train": ["e"]})
    args = ("--data-root", str(voc.parent), "--model", str(tiny21), "--os", "8",
            "--scales", "0.5,1", "--flip", "--batch-size", "2", "--limit", "3", "--json")  # fmt: skip
    code, out, err = run(*args)
    assert code == 0, err
    record = json.loads(out)
    assert (record["os"], record["scales"], record["flip"]) == (8, [0.5, 1.0], True)
    assert (record["images"], record["split"], record["dataset"]) == (3, "val", "voc")
    code, out, _ = run("--split", "train", "--model", str(tiny21), "--json", "-q",
                       env={"DEEPLAB_DATA_ROOT": str(voc)})  # fmt: skip
    assert code == 0 and json.loads(out)["images"] == 1  # data root from the environment


def test_quiet_prints_one_summary_line(folder: Path, tiny3: Path) -> None:
    code, out, err = run("--dataset", "folder", "--data-root", str(folder), "--model",
                         str(tiny3), "-q")  # fmt: skip
    assert code == 0 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("mIoU ") and err.rstrip().endswith("%).") and "over 6 images" in err


def test_report_option(folder: Path, tiny3: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    code, out, err = run("--dataset", "folder", "--data-root", str(folder), "--model",
                         str(tiny3), "--report", str(report), "--worst", "3", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads((report / "metrics.json").read_text())["miou"] == json.loads(out)["miou"]
    assert len(list((report / "worst").glob("*.png"))) == 3
    assert f"Report written to {report}" in err


# ---------------------------------------------------------------------- mistakes
def test_rgb_mask(folder: Path, tiny3: Path) -> None:
    bad = folder / "masks" / "im2.png"
    save_image(bad, np.zeros((20, 30, 3), np.uint8))
    masks = bad.parent
    fails_with(
        f"{bad} is an RGB colour mask, not a class-index mask. Convert the colour masks with "
        f"`deeplab data convert-masks {masks} -o {folder / 'masks_index'} --classes "
        f"{folder / 'classes.txt'}` (class colours → class indices) and use the converted masks "
        f"in place of {masks}, or save masks as palette (P) or grayscale (L) PNGs of class "
        "indices.",
        "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
    )  # fmt: skip


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_file_mid_run_names_it_and_stops(folder, tiny3, tmp_path, workers) -> None:
    bad = folder / "masks" / "im3.png"
    mask = np.zeros((20, 30), np.uint8)
    mask[5, 5], mask[6, 6] = 7, 9
    save_mask(bad, mask, "L")
    report = tmp_path / "report"
    fails_with(
        f"{bad} has label values outside 0..2 and 255: 7, 9. Fix the mask, or check that the "
        "data set has 3 classes.",
        "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
        "--workers", workers, "--report", str(report), "--json",
    )  # fmt: skip
    assert not report.exists()  # nothing half-written


def test_size_mismatch(folder: Path, tiny3: Path) -> None:
    bad = folder / "masks" / "im1.png"
    save_mask(bad, np.zeros((10, 30), np.uint8), "L")
    image = folder / "images" / "im1.png"
    fails_with(
        f"image and mask sizes differ for 'im1': {image} is 30x20, {bad} is 30x10. Give every "
        "mask its image's exact size.",
        "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
    )  # fmt: skip


def test_missing_files(tmp_path: Path, tiny21: Path) -> None:
    voc = make_voc(tmp_path, {"val": ["a", "b", "c"]})
    (voc / "JPEGImages" / "b.jpg").unlink()
    (voc / "SegmentationClass" / "c.png").unlink()
    fails_with(
        f"2 files listed by split 'val' are missing: {voc / 'JPEGImages' / 'b.jpg'}, "
        f"{voc / 'SegmentationClass' / 'c.png'}. Check the data root and the split list.",
        "--data-root", str(voc), "--model", str(tiny21),
    )  # fmt: skip


def test_empty_split(tmp_path: Path, tiny21: Path) -> None:
    voc = make_voc(tmp_path, {"val": ["a"]})
    listing = voc / "ImageSets" / "Segmentation" / "val.txt"
    listing.write_text("\n# nothing here\n")
    fails_with(
        f"split 'val' ({listing}) lists no images. Add image ids to it, one per line.",
        "--data-root", str(voc), "--model", str(tiny21),
    )  # fmt: skip


def test_unknown_split(tmp_path: Path, tiny21: Path) -> None:
    voc = make_voc(tmp_path, {"val": ["a"], "train": ["b"]})
    path = voc / "ImageSets" / "Segmentation" / "test.txt"
    fails_with(
        f"split 'test' not found: {path} does not exist. Use one of: train, val, or give the "
        "path of a list file.",
        "--data-root", str(voc), "--split", "test", "--model", str(tiny21),
    )  # fmt: skip


def test_missing_data_root(tmp_path: Path, tiny21: Path) -> None:
    fails_with(
        "no data root given. Pass --data-root or set DEEPLAB_DATA_ROOT to the data set folder.",
        "--model", str(tiny21),
    )  # fmt: skip
    fails_with(
        f"data root {tmp_path / 'nowhere'} does not exist. Give --data-root (or "
        "DEEPLAB_DATA_ROOT) as .../VOCdevkit or .../VOCdevkit/VOC2012.",
        "--data-root", str(tmp_path / "nowhere"), "--model", str(tiny21),
    )  # fmt: skip


def test_class_count_mismatch(folder: Path, tiny21: Path) -> None:
    fails_with(
        "the model predicts 21 classes but the folder data set (split 'all') has 3. Evaluate a "
        "model trained for this data set's classes, or fine-tune one on it with "
        "`deeplab finetune`.",
        "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny21),
    )  # fmt: skip


def test_report_folder_that_is_not_a_report(folder, tiny3, tmp_path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "thesis.tex").write_text("mine")
    fails_with(
        f"{tmp_path / 'taken'} already holds files that are not an eval report. Give --report "
        "a new or empty folder (an earlier report there is replaced).",
        "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
        "--report", str(tmp_path / "taken"),
    )  # fmt: skip


def test_bad_option_values(folder: Path, tiny3: Path) -> None:
    for args, text in [
        (("--scales", "1,-0.5"), "has a scale that is not positive"),
        (("--os", "4"), "'4' is not one of '8', '16'"),
        (("--batch-size", "0"), "0 is not in the range x>=1"),
        (("--dataset", "coco"), "'coco' is not one of 'voc', 'folder'"),
    ]:
        code, _, err = run("--data-root", str(folder), "--model", str(tiny3), *args)
        assert code == 2 and text in err, err


# ---------------------------------------------------------------------- the report (issue 13 §1)
def test_a_second_report_keeps_the_users_files(folder: Path, tiny3: Path, tmp_path: Path) -> None:
    """`eval --report rep2` run a second time deleted notes.txt and mine/keep.txt."""
    from support.hashes import tree_hashes

    rep2 = tmp_path / "rep2"
    args = ("--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
            "--report", str(rep2), "--worst", "2", "-q")  # fmt: skip
    code, _, err = run(*args)
    assert code == 0, err
    (rep2 / "notes.txt").write_text("my notes")
    (rep2 / "mine").mkdir()
    (rep2 / "mine" / "keep.txt").write_text("keep me")
    theirs = {k: v for k, v in tree_hashes(rep2).items() if k in ("notes.txt", "mine/keep.txt")}
    code, _, err = run(*args)
    assert code == 0, err
    after = tree_hashes(rep2)
    assert {k: after.get(k) for k in theirs} == theirs
    assert sorted(after) == sorted(["notes.txt", "mine/keep.txt", *json.loads(
        (rep2 / "metrics.json").read_text())["report_files"]])  # fmt: skip


def test_an_unwritable_report_is_refused_before_evaluating(folder, tiny3, tmp_path, monkeypatch):
    """`--report /proc/nope` was refused only after the whole split was evaluated."""
    import deeplabcli.evaluation.protocol as protocol

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the report location was checked")

    monkeypatch.setattr(protocol, "evaluate_dataset", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    places = {blocker / "rep": f"it is under the file {blocker}"}
    if Path("/proc/self").is_dir():
        places[Path("/proc/nope")] = "this folder does not accept new files"
    for place, reason in places.items():
        fails_with(
            f"cannot write to {place} ({reason}). Give --report a writable folder.",
            "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
            "--report", str(place),
        )  # fmt: skip
    assert blocker.read_text() == "x"


def test_a_report_that_fails_afterwards_still_prints_the_metrics(folder, tiny3, tmp_path,
                                                                 monkeypatch) -> None:  # fmt: skip
    import errno

    from support.hashes import tree_hashes

    import deeplabcli.evaluation.report as report_module

    rep = tmp_path / "rep"
    args = ("--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
            "--report", str(rep), "--json")  # fmt: skip
    code, first, err = run(*args)
    assert code == 0, err
    (rep / "notes.txt").write_text("my notes")
    before = tree_hashes(rep)

    def full(path, result):
        Path(path).write_bytes(b"half a chart")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report_module, "iou_chart", full)
    code, out, err = run(*args)
    assert code == 1
    timing = ("seconds", "images_per_second")
    record, earlier = json.loads(out), json.loads(first)
    assert {k: v for k, v in record.items() if k not in timing} == {
        k: v for k, v in earlier.items() if k not in timing}  # fmt: skip
    assert "Per-class IoU" in err and "mIoU %" in err  # the table too, before the error
    assert errors(err) == [
        f"Error: no space left on device while writing {rep}. Free space on that disk or "
        "choose another output location."
    ]
    assert err.rstrip().splitlines()[-1] == errors(err)[0] and "Traceback" not in err
    assert tree_hashes(rep) == before  # the earlier report and the notes, as they were


# ---------------------------------------------------------------------- issue 13
def test_a_scale_too_large_for_an_image_is_one_error_line(folder: Path, tiny3: Path) -> None:
    image = folder / "images" / "im0.png"
    fails_with(
        f"scale 200 makes a 6000×4000 network input (24,000,000 pixels) for the 30×20 image "
        f"'im0' ({image}), above the limit of 16,777,216 pixels (4096×4096). Use --scales of at "
        "most 167.21 for it.",
        "--dataset", "folder", "--data-root", str(folder), "--model", str(tiny3),
        "--scales", "1,200", "--workers", "0",
    )  # fmt: skip


def test_a_split_that_lists_an_image_twice_is_refused(folder: Path, tiny3: Path) -> None:
    (folder / "splits").mkdir()
    (folder / "splits" / "boot.txt").write_text("im0\nim1\nim1\nim2\nim0\nim1\n")
    fails_with(
        "split 'boot' lists 2 images more than once (im0 (2×), im1 (3×)), so the evaluation "
        "would count them twice. Evaluate a list that names each image once (bootstrapped "
        "lists are for training).",
        "--dataset", "folder", "--data-root", str(folder), "--split", "boot",
        "--model", str(tiny3),
    )  # fmt: skip


# ---------------------------------------------------------------------- backends (issue 11)
RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def tiny3_onnx(tiny3: Path) -> Path:
    """tiny3 exported to ONNX, beside its checkpoint."""
    pytest.importorskip("onnxruntime")
    from deeplabcli.exporting.onnx import export_onnx

    return export_onnx(load_model(tiny3), tiny3.parent / "tiny3.onnx")


def test_every_backend_gives_torchs_metrics_and_says_which_ran(folder, tiny3, tiny3_onnx):
    common = ("--dataset", "folder", "--data-root", str(folder), "--json", "--workers", "0")
    code, out, err = run(*common, "--model", str(tiny3), "--backend", "torch")
    assert code == 0, err
    expected = json.loads(out)["miou"]
    for model, backend in [(tiny3, "onnxruntime"), (tiny3, "openvino"), (tiny3, "auto"),
                           (tiny3_onnx, "auto"), (tiny3_onnx, "openvino")]:  # fmt: skip
        if backend == "openvino":
            pytest.importorskip("openvino")
        code, out, err = run(*common, "--model", str(model), "--backend", backend, "--flip")
        assert code == 0, err
        record = json.loads(out)
        ran = "onnxruntime" if backend == "auto" else backend
        assert (record["backend"], record["model"], record["flip"]) == (ran, str(model), True)
        assert record["precision"] == "float32"
        assert re.search(rf"│ backend +│ +{ran} \(float32\) │", err), err  # the summary's row
        code, out, err = run(*common, "--model", str(model), "--backend", backend)
        assert code == 0, err
        assert json.loads(out)["miou"] == pytest.approx(expected, abs=1e-3)


def test_backend_mistakes_are_one_line(folder, tiny3, tiny3_onnx, tmp_path, monkeypatch):
    common = ("--dataset", "folder", "--data-root", str(folder), "--workers", "0")
    fails_with(
        f"{tiny3_onnx} was exported at output stride 16, which an exported graph cannot "
        "switch. Export the model again with --os 8 (deeplab export MODEL -o FILE --os 8), or "
        "leave --os out.",
        *common, "--model", str(tiny3_onnx), "--os", "8",
    )  # fmt: skip
    fails_with(
        "the openvino backend runs on the CPU, not on cuda. Use --device cpu (or auto) with "
        "--backend openvino, or --backend torch to run on cuda.",
        *common, "--model", str(tiny3), "--backend", "openvino", "--device", "cuda",
    )  # fmt: skip
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(bytes(range(256)) * 8)
    code, out, err = run(*common, "--model", str(noise))
    assert code == 1 and out == "" and "Traceback" not in err
    assert errors(err) == [err.strip()] and err.startswith(
        f"Error: {noise} is not a readable ONNX model ("
    ) and err.rstrip().endswith("). Export it again with `deeplab export`.")  # fmt: skip
    report = tmp_path / "report"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed, for this test
    fails_with(
        'the onnxruntime backend needs onnxruntime, which is not installed. Install it from the '
        'deeplabcli checkout with pip install ".[onnx]" (pipx: pipx inject deeplabcli onnx '
        'onnxruntime; from PyPI once published: pip install "deeplabcli[onnx]").',
        *common, "--model", str(tiny3), "--backend", "onnxruntime", "--report", str(report),
    )  # fmt: skip
    assert not report.exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["default", "deeplabv3_257_mv_gpu.tflite"])
def test_each_backend_gives_torchs_miou_on_120_voc_val_images(voc_root, tflite_float_path, model):
    """Issue 11: `deeplab eval` on the 120 val images with each backend gives the same mIoU as
    torch within 0.001."""
    args = ("--data-root", str(voc_root), "--json", "-q")
    if model != "default":
        args += ("--model", str(tflite_float_path))
    results = {}
    for backend in ("torch", *RUNTIMES):
        pytest.importorskip(backend)
        code, out, err = run(*args, "--backend", backend)
        assert code == 0, err
        record = json.loads(out)
        assert (record["images"], record["backend"]) == (120, backend)
        results[backend] = record["miou"]
    print(f"{model}: mIoU " + ", ".join(f"{b} {100 * m:.4f}" for b, m in results.items()))
    for backend in RUNTIMES:
        assert abs(results[backend] - results["torch"]) <= 0.001, results
