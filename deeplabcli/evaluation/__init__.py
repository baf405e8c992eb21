"""``deeplab eval`` as a library: the paper's evaluation protocol over a data set.

:func:`run_evaluation` is the command; :func:`evaluate` / :func:`evaluate_dataset` score a model
on an open data set; :mod:`.metrics` is pure confusion-matrix maths; :mod:`.report` writes the
report folder.
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "evaluate": "protocol",
    "evaluate_dataset": "protocol",
    "run_evaluation": "protocol",
    "check_classes": "protocol",
    "EvalResult": "result",
    "ImageScore": "result",
    "WorstImage": "result",
    "SegmentationMetrics": "metrics",
    "ConfusionMatrix": "metrics",
    "compute_metrics": "metrics",
    "confusion_matrix": "metrics",
    "write_report": "report",
    "check_report_dir": "report",
    "Scorer": "scoring",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
