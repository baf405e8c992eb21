"""The eval report as one page: ``index.html`` beside the report's charts and pictures.

The page holds the summary, the per-class table, both charts and the worst images (their
pictures carry the class legends), with links to the JSON and CSV files. It needs no network:
styles are inline, there is no external script or font, and every picture is a relative link to
a file of the same report folder. A few lines of inline script check, once the page has loaded,
that every picture rendered; a missing one is named on the page (and counted in the ``<html>``
element's ``data-broken-images`` attribute).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from .report_pictures import class_colour
from .result import EvalResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.value { overflow-wrap: anywhere; max-width: 44em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #000;
          vertical-align: middle; margin-right: 0.4em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1em 0; } figcaption { color: #555; }
.na { color: #888; } .broken { color: #b00; font-weight: bold; }
"""

#: marks pictures that did not render; runs once the page (and its pictures) have loaded
_CHECK = """
window.addEventListener("load", function () {
  var broken = 0;
  document.querySelectorAll("img").forEach(function (img) {
    if (!(img.complete && img.naturalWidth > 0)) {
      broken += 1;
      var note = document.createElement("p");
      note.className = "broken";
      note.textContent = "missing picture: " + img.getAttribute("src");
      img.insertAdjacentElement("afterend", note);
    }
  });
  document.documentElement.setAttribute("data-broken-images", String(broken));
  document.documentElement.setAttribute("data-images", String(document.images.length));
});
"""


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _rows(cells: list[list[str]], header: list[str], numeric: set[int]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in cells:
        tds = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def index_html(result: EvalResult, worst_files: list[str]) -> str:
    """The page's HTML (UTF-8 text) for ``result``; ``worst_files`` are the worst pictures'
    paths relative to the report folder, in ``result.worst`` order."""
    m = result.metrics
    scales = ",".join(f"{s:g}" for s in result.scales)
    summary = [
        ("mIoU %", _percent(m.miou)),
        ("pixel accuracy %", _percent(m.pixel_accuracy)),
        ("mean class accuracy %", _percent(m.mean_accuracy)),
        ("frequency-weighted IoU %", _percent(m.fw_iou)),
        ("images", str(result.images)),
        ("model", result.model),
        ("data", f"{result.dataset} {result.split}"),
        ("protocol", f"OS {result.output_stride}, scales {scales}, "
                     f"flip {'on' if result.flip else 'off'}"),
        ("time", f"{result.seconds:.1f} s"),
    ]  # fmt: skip
    summary_table = "<table><tbody>" + "".join(
        f'<tr><th>{escape(k)}</th><td class="value">{escape(v)}</td></tr>' for k, v in summary
    ) + "</tbody></table>"  # fmt: skip
    labelled, predicted = m.confusion.sum(axis=1), m.confusion.sum(axis=0)
    per_class = []
    for c, name in enumerate(m.class_names):
        colour = "#" + "".join(f"{v:02x}" for v in class_colour(m.num_classes, c))
        iou = _percent(m.iou[c])
        per_class.append([
            str(c),
            f'<span class="swatch" style="background:{colour}"></span>{escape(name)}',
            iou if iou != "n/a" else '<span class="na">n/a</span>',
            _percent(m.accuracy[c]),
            f"{int(labelled[c]):,}",
            f"{int(predicted[c]):,}",
        ])  # fmt: skip
    class_table = _rows(per_class, ["#", "class", "IoU %", "accuracy %", "labelled pixels",
                                    "predicted pixels"], {0, 2, 3, 4, 5})  # fmt: skip
    note = ""
    if m.absent:
        names = ", ".join(m.class_names[c] for c in m.absent)
        note = (f"<p>n/a: {escape(names)}: in neither the labels nor the predictions; left out "
                f"of the mean ({m.num_classes - len(m.absent)} of {m.num_classes} classes "
                "averaged).</p>")  # fmt: skip
    worst = "".join(
        f'<figure><img src="{escape(name)}" alt="{escape(w.score.id)}: image, ground truth, '
        f'prediction"><figcaption>{rank}. {escape(w.score.id)}: mIoU {w.score.miou:.3f}, '
        f"pixel accuracy {w.score.pixel_accuracy:.3f}</figcaption></figure>"
        for rank, (w, name) in enumerate(zip(result.worst, worst_files, strict=True), 1)
    )
    title = f"deeplab eval: {result.dataset} {result.split}, {result.images} images"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<h2>Summary</h2>
{summary_table}
<p>Files: <a href="metrics.json">metrics.json</a>, <a href="per_class.csv">per_class.csv</a>,
<a href="per_image.csv">per_image.csv</a>.</p>
<h2>Per class</h2>
{class_table}
{note}
<img src="per_class_iou.png" alt="bar chart of the per-class IoU">
<h2>Confusion matrix</h2>
<img src="confusion_matrix.png" alt="confusion matrix, percent of each class's labelled pixels">
<h2>Worst images</h2>
{worst or "<p>None asked for.</p>"}
<script>{_CHECK}</script>
</body>
</html>
"""


def write_index_html(path: Path, result: EvalResult, worst_files: list[str]) -> None:
    """Write :func:`index_html` to ``path``."""
    path.write_text(index_html(result, worst_files), encoding="utf-8")
