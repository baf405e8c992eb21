"""``deeplab predict`` as a library: inputs → planned outputs → batches → mask PNGs.

:func:`predict_files` runs the pipeline over files, folders and globs; :func:`predict` and
:func:`predict_batch` are the in-memory forms.
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "predict": "arrays",
    "predict_batch": "arrays",
    "predict_files": "pipeline",
    "PredictResult": "results",
    "PredictSummary": "results",
    "class_shares": "results",
    "Job": "inputs",
    "expand_inputs": "inputs",
    "plan_outputs": "inputs",
    "write_png": "outputs",
    "palette_png": "outputs",
    "index_png": "outputs",
    "overlay_png": "outputs",
    "write_npz": "outputs",
    "confidence_png": "outputs",
    "VideoJob": "video",
    "predict_video": "video",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
