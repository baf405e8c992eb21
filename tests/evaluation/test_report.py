"""deeplabcli.evaluation.report: the ``deeplab eval --report DIR`` folder, written from a real
evaluation of a tiny data set whose every number is known by hand.

The model predicts "cat" (class 1) on every pixel, so each image's scores, the confusion
matrix and the worst-image panels follow from the masks alone.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.hashes import sha256
from support.threads import one_thread  # noqa: F401 (autouse: applies to this module)

from deeplabcli.data.folder import FolderDataset
from deeplabcli.data.palette import draw_outlines
from deeplabcli.errors import MissingDependencyError, OutputWriteError
from deeplabcli.evaluation import evaluate_dataset
from deeplabcli.evaluation.report import (
    MARKER,
    PANEL_SIDE,
    check_report_dir,
    require_matplotlib,
    write_report,
)
from deeplabcli.models import build_model

H, W = 20, 28
CAT, DOG, VOID = (200, 40, 40), (32, 192, 32), (224, 224, 192)
CLASSES_FILE = "background\ncat 200 40 40\ndog #20c020\nbird\n"
NAMES = ["background", "cat", "dog", "bird"]
MODEL_NAME = "all-cat"


def masks() -> dict[str, np.ndarray]:
    half = np.zeros((H, W), np.uint8)
    half[:, W // 2 :] = 1
    dog = np.full((H, W), 2, np.uint8)
    dog[:5] = 255
    return {
        "a": np.ones((H, W), np.uint8),  # all cat: mIoU 1
        "b": half,  # background | cat: IoU(cat) 0.5, IoU(background) 0 → 0.25
        "sub/c": dog,  # dog under a void band: 0
        "void": np.full((H, W), 255, np.uint8),  # nothing labelled: n/a
    }


#: labelled pixels per class, all predicted as cat (column 1)
LABELLED = [W // 2 * H, H * W + W // 2 * H, (H - 5) * W, 0]  # 280, 840, 420, 0
PREDICTED_CAT = sum(LABELLED)  # 1540
MIOU = (0 + 840 / 1540 + 0) / 3  # bird is absent: not in the mean
WORST = [(2, "sub/c", 0.0, 0.0), (1, "b", 0.25, 0.5), (0, "a", 1.0, 1.0)]
WORST_FILES = ["worst/01_sub__c.png", "worst/02_b.png", "worst/03_a.png"]


def cat_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=len(NAMES)).eval()
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.bias[1] = 5.0
    return model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> FolderDataset:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "classes.txt").write_text(CLASSES_FILE, encoding="utf-8")
    for stem, mask in masks().items():
        for sub, array in (("images", rng.integers(0, 256, (H, W, 3), dtype=np.uint8)),
                           ("masks", mask)):  # fmt: skip
            path = root / sub / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return FolderDataset(root)


@pytest.fixture(scope="module")
def result(dataset: FolderDataset):
    return evaluate_dataset(
        cat_model(), dataset, device="cpu", workers=0, keep_worst=8, model_name=MODEL_NAME
    )


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, result, dataset) -> Path:
    """One report, written once for the tests that only read it."""
    pytest.importorskip("matplotlib")
    parent = tmp_path_factory.mktemp("written")
    target = write_report(result, dataset, str(parent / "report"))
    assert target == parent / "report" and isinstance(target, Path)
    assert sorted(p.name for p in parent.iterdir()) == ["report"]  # no temporaries left
    return target


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- the evaluation itself
def test_the_evaluation_is_the_hand_computed_one(result, dataset) -> None:
    assert dataset.ids == ["a", "b", "sub/c", "void"]
    expected = np.zeros((4, 4), np.int64)
    expected[:, 1] = LABELLED
    np.testing.assert_array_equal(result.metrics.confusion, expected)
    assert result.metrics.miou == pytest.approx(MIOU)
    assert [(w.score.index, w.score.id, w.score.miou, w.score.pixel_accuracy)
            for w in result.worst] == WORST  # fmt: skip
    assert math.isnan(result.per_image[3].miou)  # the unlabelled image is never a worst one


# ---------------------------------------------------------------------- files and numbers
REPORT_FILES = sorted(["metrics.json", "per_class.csv", "per_image.csv", "confusion_matrix.png",
                       "per_class_iou.png", "index.html", *WORST_FILES])  # fmt: skip


def test_report_files(written: Path) -> None:
    assert files_under(written) == REPORT_FILES


def test_metrics_json(written: Path, result) -> None:
    data = json.loads((written / MARKER).read_text(encoding="utf-8"))
    expected = result.to_json()
    expected["confusion_matrix"] = result.metrics.confusion.tolist()
    expected["worst_images"] = [
        {"id": i, "miou": m, "pixel_accuracy": a, "file": f}
        for (_, i, m, a), f in zip(WORST, WORST_FILES, strict=True)
    ]
    expected["report_files"] = ["metrics.json", "per_class.csv", "per_image.csv",
                                "confusion_matrix.png", "per_class_iou.png", "index.html",
                                *WORST_FILES]  # fmt: skip
    assert data == json.loads(json.dumps(expected))
    # and the numbers themselves
    assert data["miou"] == pytest.approx(MIOU)
    assert data["pixel_accuracy"] == pytest.approx(840 / 1540)
    assert data["per_class_iou"] == pytest.approx(
        {"background": 0.0, "cat": 840 / 1540, "dog": 0.0, "bird": None}
    )
    assert data["absent_classes"] == ["bird"]
    assert (data["images"], data["pixels"], data["model"]) == (4, 1540, MODEL_NAME)
    assert (data["os"], data["scales"], data["flip"]) == (16, [1.0], False)
    assert (data["dataset"], data["split"]) == ("folder", "all")
    assert data["confusion_matrix"] == [[0, 280, 0, 0], [0, 840, 0, 0], [0, 420, 0, 0],
                                        [0, 0, 0, 0]]  # fmt: skip


def test_per_class_csv(written: Path) -> None:
    table = rows(written / "per_class.csv")
    assert table == [
        ["index", "class", "iou", "accuracy", "label_pixels", "predicted_pixels",
         "true_positive_pixels"],
        ["0", "background", "0.000000", "0.000000", "280", "0", "0"],
        ["1", "cat", f"{840 / 1540:.6f}", "1.000000", "840", "1540", "840"],
        ["2", "dog", "0.000000", "0.000000", "420", "0", "0"],
        ["3", "bird", "", "", "0", "0", "0"],  # n/a cells are empty
    ]  # fmt: skip


def test_per_image_csv(written: Path) -> None:
    table = rows(written / "per_image.csv")
    assert table == [
        ["index", "id", "miou", "pixel_accuracy", "labelled_pixels"],
        ["0", "a", "1.000000", "1.000000", "560"],
        ["1", "b", "0.250000", "0.500000", "560"],
        ["2", "sub/c", "0.000000", "0.000000", "420"],
        ["3", "void", "", "", "0"],
    ]


def test_charts_are_pngs_of_the_expected_size(written: Path) -> None:
    report = written
    # confusion: (3 + 0.45 × 4 + 1.5) × (3 + 0.45 × 4 + 0.6) inches (three title lines);
    # IoU bars: 8 × 4 (at least, for the title and the legend below); 100 dpi
    for name, size in (("confusion_matrix.png", (630, 540)), ("per_class_iou.png", (800, 400))):
        with Image.open(report / name) as chart:
            assert chart.format == "PNG" and chart.size == size
            colours = chart.convert("RGB").getcolors(maxcolors=1 << 20)
            assert len(colours) > 20  # drawn on, not a blank canvas


# ---------------------------------------------------------------------- worst-image panels
def blend(photo: np.ndarray, mask: np.ndarray, colours: dict[int, tuple[int, int, int]]):
    """Class colour over the photo at 60 %; void shows the void colour; background the photo."""
    out = photo.astype(np.float64).copy()
    for value, colour in colours.items():
        where = mask == value
        out[where] = 0.4 * photo[where] + 0.6 * np.asarray(colour, np.float64)
    out[mask == 255] = VOID
    return np.rint(out).astype(np.uint8)


def test_worst_panels_show_image_ground_truth_and_prediction(written: Path, dataset) -> None:
    report = written
    assert max(H, W) <= PANEL_SIDE  # panels keep the image size
    colours = {1: CAT, 2: DOG}  # class 0 is "background": its pixels keep the photo
    for (index, _, _, _), name in zip(WORST, WORST_FILES, strict=True):
        sample = dataset.load(index)
        with Image.open(report / name) as opened:
            picture = np.asarray(opened.convert("RGB"))
        gap, top = 8, 48
        assert picture.shape[1:] == (3 * W + 4 * gap, 3)
        assert picture.shape[0] > H + top + gap  # the class legend below the panels
        panels = [picture[top : top + H, gap + i * (W + gap) : gap + i * (W + gap) + W]
                  for i in range(3)]  # fmt: skip
        np.testing.assert_array_equal(panels[0], sample.image)
        outlined = draw_outlines(blend(sample.image, sample.mask, colours), sample.mask)
        np.testing.assert_array_equal(panels[1], outlined)  # classes outlined
        everywhere_cat = np.ones((H, W), np.uint8)
        np.testing.assert_array_equal(panels[2], blend(sample.image, everywhere_cat, colours))
        assert (picture[:, :gap] == 255).all()  # white margin
        between = picture[top : top + H, gap + W : 2 * gap + W]
        assert (between == 255).all()  # white gap between panels
    # the mixed image: its background half is the photo itself in the ground truth panel, up to
    # the outline's black edge along the border with the cat half
    b = dataset.load(1)
    with Image.open(report / "worst/02_b.png") as opened:
        truth = np.asarray(opened.convert("RGB"))[48 : 48 + H, 16 + W : 16 + 2 * W]
    np.testing.assert_array_equal(truth[:, : W // 2 - 1], b.image[:, : W // 2 - 1])
    assert (truth[:, W // 2 - 1] == 0).all() and (truth[:, W // 2] == 255).all()


def test_no_worst_images_asked_for(tmp_path: Path, dataset, matplotlib) -> None:
    plain = evaluate_dataset(cat_model(), dataset, device="cpu", workers=0, keep_worst=0)
    report = write_report(plain, dataset, tmp_path / "r")
    assert (report / "worst").is_dir() and not any((report / "worst").iterdir())
    assert json.loads((report / MARKER).read_text())["worst_images"] == []
    assert json.loads((report / MARKER).read_text())["model"] == "model"  # the default name


# ---------------------------------------------------------------------- where it may go
def test_an_earlier_report_replaces_only_its_own_files(tmp_path: Path, result, dataset, matplotlib):
    """Issue 13: a second `--report rep2` deleted the user's notes.txt and mine/keep.txt."""
    target = write_report(result, dataset, tmp_path / "r")
    (target / "worst" / "99_mine.png").write_bytes(b"a picture of mine")
    (target / "notes.txt").write_text("from before")
    (target / "mine").mkdir()
    (target / "mine" / "keep.txt").write_text("keep me")
    stale = json.loads((target / MARKER).read_text())
    stale["report_files"].append("worst/09_gone.png")  # a picture the earlier report wrote
    (target / MARKER).write_text(json.dumps(stale))
    (target / "worst" / "09_gone.png").write_bytes(b"earlier report")
    (target / "per_class.csv").write_text("earlier report")
    theirs = {name: sha256(target / name) for name in
              ("notes.txt", "mine/keep.txt", "worst/99_mine.png")}  # fmt: skip
    assert write_report(result, dataset, target) == target
    assert files_under(target) == sorted([*REPORT_FILES, *theirs])
    assert {name: sha256(target / name) for name in theirs} == theirs
    assert rows(target / "per_class.csv")[0][0] == "index"  # the report's own file: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_an_empty_folder_is_filled(tmp_path: Path, result, dataset, matplotlib) -> None:
    (tmp_path / "r").mkdir()
    write_report(result, dataset, tmp_path / "r")
    assert (tmp_path / "r" / MARKER).is_file()


def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path, result, dataset, matplotlib):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputWriteError) as caught:
        write_report(result, dataset, mine)
    assert str(caught.value) == (
        f"{mine} already holds files that are not an eval report. Give --report a new or "
        "empty folder (an earlier report there is replaced)."
    )
    assert files_under(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_unwritable_place_is_one_clear_error(tmp_path, result, dataset, matplotlib) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "report"
    with pytest.raises(OutputWriteError) as caught:
        write_report(result, dataset, target)
    assert str(caught.value) == (
        f"cannot write to {target} (it is under the file {blocker}). Give --report a writable "
        "folder."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_check_report_dir_accepts_new_empty_and_earlier_report_folders(tmp_path: Path) -> None:
    assert check_report_dir(str(tmp_path / "new")) == tmp_path / "new"
    assert isinstance(check_report_dir(str(tmp_path / "new")), Path)
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "empty").mkdir()
    assert check_report_dir(tmp_path / "empty") == tmp_path / "empty"
    earlier = tmp_path / "earlier"
    (earlier / "worst").mkdir(parents=True)
    (earlier / MARKER).write_text('{"confusion_matrix": []}')
    (earlier / "per_class.csv").write_text("")
    assert check_report_dir(earlier) == earlier


def test_check_report_dir_refusals(tmp_path: Path) -> None:
    a_file = tmp_path / "report.txt"
    a_file.write_text("x")
    with pytest.raises(OutputWriteError) as caught:
        check_report_dir(a_file)
    assert str(caught.value) == f"{a_file} is a file, not a folder. Give --report a folder name."
    other = tmp_path / "other"
    (other / MARKER).mkdir(parents=True)  # a folder named metrics.json is no marker
    with pytest.raises(OutputWriteError) as caught:
        check_report_dir(other)
    assert str(caught.value) == (
        f"{other} already holds files that are not an eval report. Give --report a new or "
        "empty folder (an earlier report there is replaced)."
    )


# ---------------------------------------------------------------------- matplotlib
def test_require_matplotlib_when_installed(matplotlib) -> None:
    assert require_matplotlib() is None


def test_require_matplotlib_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    with pytest.raises(MissingDependencyError) as caught:
        require_matplotlib()
    assert str(caught.value) == (
        "--report needs matplotlib to draw its charts, and it is not installed. "
        'Install it from the deeplabcli checkout with pip install ".[report]" (pipx: pipx '
        'inject deeplabcli matplotlib; from PyPI once published: pip install "deeplabcli[report]").'
    )


def test_without_matplotlib_nothing_is_written(tmp_path, result, dataset, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"^--report needs matplotlib"):
        write_report(result, dataset, tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_only_names_a_report_writes_are_ever_removed(tmp_path: Path, result, dataset, matplotlib):
    """A metrics.json that lists other files (edited by hand, or hostile) deletes none of them."""
    from support.hashes import tree_hashes

    target = tmp_path / "r"
    (target / "worst").mkdir(parents=True)
    listed = ["../outside.txt", "notes.txt", "worst/../../x.png", "worst/05_old.png"]
    (target / MARKER).write_text(json.dumps({"confusion_matrix": [], "report_files": listed}))
    (tmp_path / "outside.txt").write_text("outside")
    (tmp_path / "x.png").write_bytes(b"x")
    (target / "notes.txt").write_text("notes")
    (target / "worst" / "05_old.png").write_bytes(b"the earlier report's")
    theirs = {k: v for k, v in tree_hashes(tmp_path).items()
              if k in ("outside.txt", "x.png", "r/notes.txt")}  # fmt: skip
    write_report(result, dataset, target)
    after = tree_hashes(tmp_path)
    assert {k: after.get(k) for k in theirs} == theirs
    assert not (target / "worst" / "05_old.png").exists()


def test_a_report_from_before_the_file_list_is_still_known(tmp_path, result, dataset, matplotlib):
    target = tmp_path / "r"
    (target / "worst").mkdir(parents=True)
    older = {"confusion_matrix": [], "worst_images": [{"file": "worst/01_x.png"}]}
    (target / MARKER).write_text(json.dumps(older))
    (target / "worst" / "01_x.png").write_bytes(b"old picture")
    (target / "index.html").write_text("<p>my page</p>")  # older reports wrote no index.html
    before = sha256(target / "index.html")
    with pytest.raises(OutputWriteError) as caught:
        write_report(result, dataset, target)
    assert str(caught.value) == (
        f"{target / 'index.html'} was not written by an earlier report, so it is not replaced. "
        "Move it away, or give --report another folder."
    )
    assert sha256(target / "index.html") == before
    assert json.loads((target / MARKER).read_text()) == older  # nothing was moved in
    (target / "index.html").unlink()
    write_report(result, dataset, target)
    assert not (target / "worst" / "01_x.png").exists()  # the older report's own picture
    assert files_under(target) == sorted(json.loads((target / MARKER).read_text())["report_files"])
