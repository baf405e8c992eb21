"""The report's ``index.html``: one page with everything, no network, opened in a real browser.

The browser test runs headless Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it)
with ``--dump-dom``: the page's own check records how many of its pictures failed to render in
the ``<html>`` element, and the browser's log (``--enable-logging=stderr``) shows every console
message, errors included. It skips, saying why, where Chromium is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplabcli.data.folder import FolderDataset
from deeplabcli.evaluation import evaluate_dataset
from deeplabcli.evaluation.report import MARKER, write_report
from deeplabcli.models import build_model

pytest.importorskip("matplotlib")
MODEL = "runs/a-model-name-long-enough-to-wrap/" + "x" * 60


class Links(HTMLParser):
    """Every ``src`` and ``href`` of a page, and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((24, 32), np.uint8)
        mask[4:20, 4 + i * 6 : 20 + i * 6] = 1 + i % 2
        for sub, array in (("images", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)),
                           ("masks", mask)):  # fmt: skip
            (root / sub).mkdir(exist_ok=True)
            Image.fromarray(array).save(root / sub / f"img{i}.png")
    dataset = FolderDataset(root)
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=4).eval()
    result = evaluate_dataset(model, dataset, device="cpu", workers=0, keep_worst=2,
                              model_name=MODEL)  # fmt: skip
    return write_report(result, dataset, tmp_path_factory.mktemp("out") / "report")


def test_the_page_holds_the_summary_table_charts_and_worst_images(report: Path) -> None:
    data = json.loads((report / MARKER).read_text(encoding="utf-8"))
    assert "index.html" in data["report_files"]
    page = Links()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    text = " ".join(" ".join(page.text).split())
    assert f"mIoU % {100 * data['miou']:.2f}" in text
    assert f"model {MODEL}" in text  # the whole model name
    for name in ("background", "cat", "dog", "bird"):
        assert re.search(rf"\d+ {name} ", text), name
    assert "bird n/a" in text  # absent from labels and predictions
    pictures = [link for link in page.links if link.endswith(".png")]
    assert pictures == ["per_class_iou.png", "confusion_matrix.png",
                        *(w["file"] for w in data["worst_images"])]  # fmt: skip
    for link in page.links:  # everything is a file of the report: no network needed
        assert "://" not in link and not link.startswith("//"), link
        assert (report / link).is_file(), link


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run does)")
    return found


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """(the page's DOM once loaded, the browser's console lines)."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_page_renders_every_picture_without_console_errors(report: Path, tmp_path) -> None:
    dom, console = open_in_chromium(report / "index.html", tmp_path / "profile")
    assert console == []
    assert 'data-broken-images="0"' in dom and 'data-images="4"' in dom  # 2 charts + 2 worst

    broken = tmp_path / "broken"  # the same page with one picture gone: the check says so
    shutil.copytree(report, broken)
    missing = sorted((broken / "worst").iterdir())[0]
    missing.unlink()
    dom, console = open_in_chromium(broken / "index.html", tmp_path / "profile2")
    assert 'data-broken-images="1"' in dom
    assert f"missing picture: worst/{missing.name}" in dom
