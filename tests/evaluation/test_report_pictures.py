"""The report's pictures, checked as a reader would look at them: nothing cut, labels beside the
bars, percentages on a 0–100 scale, a legend on the worst images, and class outlines."""

from __future__ import annotations

import numpy as np
import pytest

from deeplabcli.data.palette import class_outlines, draw_outlines, voc_palette
from deeplabcli.evaluation.metrics import compute_metrics
from deeplabcli.evaluation.report_pictures import (
    blend,
    confusion_figure,
    iou_figure,
    worst_picture,
)
from deeplabcli.evaluation.result import EvalResult

pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg

LONG_MODEL = "/home/someone/experiments/2024-06-deeplab/" + "runs/" * 12 + "mobilenetv2-final-ckpt"


def result_of(confusion: np.ndarray, model: str = LONG_MODEL) -> EvalResult:
    names = ("background", "cat", "dog", "bird")
    return EvalResult(compute_metrics(confusion, names), model=model, output_stride=16,
                      scales=(1.0,), flip=False, dataset="folder", split="val", per_image=[])  # fmt: skip


#: cat predicted perfectly (IoU 1: its bar reaches the right edge), dog half right, bird absent
CONFUSION = np.array([[90, 0, 10, 0], [0, 50, 0, 0], [10, 0, 10, 0], [0, 0, 0, 0]])


def drawn(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer(), fig.bbox


def test_iou_chart_labels_sit_beside_the_bars_and_nothing_is_cut() -> None:
    fig = iou_figure(result_of(CONFUSION))
    renderer, page = drawn(fig)
    ax = fig.axes[0]
    bars = [p.get_window_extent(renderer) for p in ax.patches]
    labels = [t for t in ax.texts if t.get_text()[0].isdigit() or t.get_text().startswith("n/a")]
    assert [t.get_text() for t in labels] == ["0.818", "1.000", "0.333", "n/a (absent, not in the mean)"]  # fmt: skip
    for label in labels:
        box = label.get_window_extent(renderer)
        assert not any(box.overlaps(bar) for bar in bars), label.get_text()
        assert page.contains(box.x0, box.y0) and page.contains(box.x1, box.y1), label.get_text()
    title = ax._left_title  # the chart's title is left-aligned
    box = title.get_window_extent(renderer)
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1  # not cut
    assert LONG_MODEL in title.get_text().replace("\n", "")  # the whole name, wrapped
    legend = fig.legends[0].get_window_extent(renderer)
    assert not any(legend.overlaps(bar) for bar in bars)


def test_confusion_matrix_is_in_percent_on_a_0_to_100_scale() -> None:
    fig = confusion_figure(result_of(CONFUSION))
    renderer, page = drawn(fig)
    ax, bar = fig.axes
    assert ax.images[0].get_clim() == (0.0, 100.0)
    assert bar.get_ylim() == (0.0, 100.0) and "%" in bar.get_ylabel()
    cells = {t.get_text() for t in ax.texts}
    assert {"90", "10", "100", "50"} <= cells  # row percentages, not fractions
    title = ax.title.get_window_extent(renderer)
    assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1
    assert LONG_MODEL in ax.title.get_text().replace("\n", "")


def test_worst_picture_has_a_legend_of_every_class_shown() -> None:
    h, w = 40, 60
    photo = np.full((h, w, 3), 128, np.uint8)
    label = np.zeros((h, w), np.uint8)
    label[10:30, 10:30] = 8  # cat
    label[:, -4:] = 255  # void
    prediction = np.zeros((h, w), np.uint8)
    prediction[10:30, 30:50] = 12  # dog
    names = ["background", *(f"c{i}" for i in range(1, 8)), "cat", *(f"c{i}" for i in range(9, 12)),
             "dog", *(f"c{i}" for i in range(13, 21))]  # fmt: skip
    picture = np.asarray(worst_picture(photo, label, prediction, voc_palette(), names, "x"))
    assert picture.shape[1] == 3 * w + 4 * 8 and picture.shape[0] > 48 + h + 8
    legend = picture[48 + h + 8 :]
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    for index in (8, 12, 255):  # cat, dog, void: a swatch each
        assert tuple(int(v) for v in voc_palette()[index]) in colours, index
    assert tuple(int(v) for v in voc_palette()[15]) not in colours  # person is not shown


def test_outlines_keep_a_dark_class_on_a_dark_photo_visible() -> None:
    photo = np.zeros((20, 20, 3), np.uint8)  # a black photo
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 12  # dog: (64, 0, 128), dark
    plain = blend(photo, mask, voc_palette(), background=True)
    edge = class_outlines(mask)
    expected = np.zeros((20, 20), bool)  # where the class changes from the pixel above/left
    expected[[5, 15], 5:15] = True
    expected[5:15, [5, 15]] = True
    np.testing.assert_array_equal(edge, expected)
    assert (plain[edge] == 255).all()  # a white line along the border
    halo = draw_outlines(photo, mask)
    assert (halo[~edge] == 0).all()  # a black edge around it (on black: unchanged)
    void = np.full((20, 20), 255, np.uint8)
    void[5:15, 5:15] = 12
    assert not class_outlines(void).any()  # borders with void are not outlined
