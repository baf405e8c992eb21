"""``deeplab predict`` without torch: exported networks on ONNX Runtime or OpenVINO, with the
pre- and post-processing in numpy and Pillow.

Importing torch takes longer than segmenting a photo, so when a run needs nothing that only
torch does, it runs here: :func:`plan` (torch-free, cheap) says whether it can, and
:func:`predict_light` writes the same masks, records, messages and summary as
:func:`~deeplabcli.prediction.pipeline.predict_files`. It can when the backend is a runtime
(``--backend onnxruntime|openvino``, or ``auto`` choosing one), on a CPU, at one scale without
flip or tiles, for images (no videos), in one process (not under ``torchrun``), and the model
is an exported file (``--model model.onnx|.xml``) or a reference whose export an earlier run
left in the cache (:func:`~deeplabcli.exporting.references.lookup_reference`).

Per image: decode (EXIF orientation honoured) → :func:`~deeplabcli.runtimes.preprocess.preprocess`
→ the network → the logits cropped to the image's region and resized bilinearly to its size
as ``F.interpolate`` does (:func:`~deeplabcli.runtimes.postprocess.class_map`, bit for bit;
:func:`probabilities`) → the output file.
Images run one at a time (whatever ``--batch-size``); decoding and writing overlap the network
on background threads.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig, PredictConfig
from ..data.images import read_image
from ..data.palette import palette_for
from ..errors import DeeplabError
from ..exporting.references import lookup_reference
from ..runtimes.exported import (
    ExportedModel,
    exported_backend,
    is_exported_path,
    load_exported,
)
from ..runtimes.extras import auto_backend, backend_installed, cuda_present, require_backend
from ..runtimes.postprocess import class_map, resize_scores
from ..runtimes.preprocess import preprocess
from ..runtimes.sessions import RuntimeNetwork
from .inputs import Job, plan_outputs
from .outputs import PROBABILITY_FORMATS, check_format, output_suffix
from .results import PredictResult, PredictSummary, skipped_result, write_result
from .video_io import is_video_name

#: the backends this path runs on
LIGHT_BACKENDS = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class LightPlan:
    """A torch-free run: the exported network to open and the runtime to open it on."""

    path: Path  # .onnx, or .xml (with its .bin)
    backend: str  # one of LIGHT_BACKENDS


def plan(model_ref: str | None, inputs: Sequence[str], config: PredictConfig) -> LightPlan | None:
    """The torch-free run of ``deeplab predict inputs --model model_ref`` with ``config``, or
    None when it needs the torch pipeline (see the module docstring). Imports neither torch nor
    a runtime and opens no model: a few ``stat`` calls and one small cache file at most.

    An explicitly named runtime that is not installed raises its one-line
    :class:`~deeplabcli.errors.MissingDependencyError` here.
    """
    single = config.scales == (1.0,) and not config.flip and config.tile is None
    on_cpu = config.device == "cpu" or (config.device == "auto" and not cuda_present())
    alone = os.environ.get("WORLD_SIZE", "").strip() in ("", "1")
    videos = any(is_video_name(Path(text)) and Path(text).is_file() for text in inputs)
    if not (single and on_cpu and alone) or videos or config.backend == "torch":
        return None
    if config.backend != "auto":
        require_backend(config.backend)
    if model_ref is not None and is_exported_path(model_ref):
        if config.output_stride is not None:  # the pipeline says what --os does to a graph
            return None
        backend = exported_backend(model_ref, config.backend)
        if not backend_installed(backend):
            return None  # the pipeline says which extra runs it
        return LightPlan(Path(model_ref).expanduser(), backend)
    backend = auto_backend(config.device) if config.backend == "auto" else config.backend
    if backend not in LIGHT_BACKENDS:
        return None
    path = lookup_reference(model_ref, backend, config.output_stride)
    return None if path is None else LightPlan(path, backend)


def predict_light(
    light: LightPlan,
    inputs: Sequence[str],
    config: PredictConfig | None = None,
    *,
    on_result: Callable[[PredictResult], None] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> PredictSummary:
    """:func:`~deeplabcli.prediction.pipeline.predict_files` for a run :func:`plan` made:
    the same outputs, records (``on_result`` is called on this thread as each input finishes,
    in input order), progress bar (more than one image) and summary, without torch.
    ``threads``: the runtime's intra-op threads (None: its own choice, all cores)."""
    config = config or PredictConfig()
    model = load_exported(light.path, light.backend, threads=threads)
    if not _takes_every_image(model):  # the pipeline checks each image's input size (torch)
        from .pipeline import predict_files

        config = config.replace(backend=light.backend)
        return predict_files(model, inputs, config, on_result=on_result, progress=progress)
    model_config = model.config
    check_format(config.format, model_config.num_classes)
    start = time.perf_counter()
    jobs, problems = plan_outputs(inputs, config.output, output_suffix(config.format))
    results: list[PredictResult] = []
    total = len(jobs) + len(problems)
    with _progress_bar(total, enabled=progress and total > 1) as advance:

        def finish(result: PredictResult) -> None:
            if result.status == "written":
                result.backend = model.backend
            results.append(result)
            if on_result is not None:
                on_result(result)
            advance()

        for name, message in problems:
            finish(PredictResult(input=name, status="failed", message=message))
        todo = []
        for job in jobs:
            if job.output.exists() and not config.overwrite:
                finish(skipped_result(job))
            else:
                todo.append(job)
        _Run(model.network, model_config, config, finish).run(todo)
    counts = [sum(r.status == s for r in results) for s in ("written", "skipped", "failed")]
    return PredictSummary(results, *counts, time.perf_counter() - start)


def _takes_every_image(model: ExportedModel) -> bool:
    """Whether every image's network input has a size the graph takes: any graph with dynamic
    H and W, and one exported at ``--static-size S,S`` for a model that fits images into S×S."""
    static, prep = model.info.static_size, model.config.preprocessing
    return static is None or (prep.resize == "fit" and tuple(static) == (prep.size, prep.size))


@dataclass
class _Decoded:
    job: Job
    rgb: np.ndarray  # uint8 (H, W, 3)
    seconds: float


class _Run:
    """Decode (threads) → network and post-processing (this thread) → write (threads); each
    image's record is reported in input order once it is written."""

    def __init__(
        self,
        network: RuntimeNetwork,
        model_config: ModelConfig,
        config: PredictConfig,
        finish: Callable[[PredictResult], None],
    ) -> None:
        self.network = network
        self.prep = model_config.preprocessing
        self.align_corners = bool(model_config.align_corners)
        self.class_names = tuple(model_config.class_names)
        self.palette = palette_for(model_config.num_classes)
        self.config = config
        self.finish = finish

    def run(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        window = max(2, self.config.workers)
        queue = iter(jobs)
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="deeplab-io") as pool:
            loads: deque[Future[_Decoded | PredictResult]] = deque()
            outcomes: deque[Future[PredictResult]] = deque()  # in input order
            while True:
                while len(loads) < window and (job := next(queue, None)):
                    loads.append(pool.submit(_decode, job))
                if not loads:
                    break
                loaded = loads.popleft().result()
                if isinstance(loaded, PredictResult):
                    outcomes.append(_done(loaded))
                else:
                    outcomes.append(pool.submit(self._write, loaded, *self._segment(loaded)))
                while outcomes and (outcomes[0].done() or len(outcomes) > window):
                    self.finish(outcomes.popleft().result())
            while outcomes:
                self.finish(outcomes.popleft().result())

    def _segment(self, item: _Decoded) -> tuple[np.ndarray, float]:
        """The class map (H, W) of a decoded image, or its probabilities (C, H, W) for the
        probs/confidence formats, and the seconds it took."""
        start = time.perf_counter()
        x, content = preprocess(item.rgb, self.prep)
        logits = self.network(x)[0]  # (C, H', W')
        size = item.rgb.shape[:2]
        if self.config.format in PROBABILITY_FORMATS:
            result = probabilities(logits, content, size, self.align_corners)
        else:
            result = class_map(logits, content, size, self.align_corners)
        return result, time.perf_counter() - start

    def _write(self, item: _Decoded, result: np.ndarray, seconds: float) -> PredictResult:
        return write_result(
            item.job, self.config.format, result, item.rgb, self.palette, self.class_names,
            overwrite=self.config.overwrite, seconds=item.seconds + seconds,
        )  # fmt: skip


def _decode(job: Job) -> _Decoded | PredictResult:
    """Read ``job``'s image; a bad one becomes its failed record (the message names it)."""
    start = time.perf_counter()
    try:
        image = read_image(job.source)
    except DeeplabError as error:
        return PredictResult(input=str(job.source), status="failed", message=str(error))
    return _Decoded(job, np.asarray(image, dtype=np.uint8), time.perf_counter() - start)


def _done(result: PredictResult) -> Future[PredictResult]:
    future: Future[PredictResult] = Future()
    future.set_result(result)
    return future


@contextmanager
def _progress_bar(total: int, *, enabled: bool) -> Iterator[Callable[[], None]]:
    """``advance()`` of a progress bar over ``total`` images, or a no-op without importing
    rich (what a one-photo run saves)."""
    if not enabled:
        yield lambda: None
        return
    from ..progress import progress_bar

    with progress_bar(total, "Predicting", unit="img") as bar:
        yield bar.advance


# ---------------------------------------------------------------------- logits → results
def probabilities(
    logits: np.ndarray, content: tuple[int, int], size: tuple[int, int], align_corners: bool
) -> np.ndarray:
    """float32 logits (C, H', W') of one network input → the class probabilities float32
    (C, H, W) of the image (see :func:`~deeplabcli.runtimes.postprocess.class_map`): the
    logits cropped, resized bilinearly and softmaxed over C, as the Segmenter computes them
    (to float rounding, ~1e-6). Resized class by class: no (C, H, W) temporaries."""
    crop = logits[:, : content[0], : content[1]]
    scores = np.empty((logits.shape[0], *size), dtype=np.float32)
    for c in range(logits.shape[0]):
        scores[c] = resize_scores(crop[c : c + 1], size, align_corners)[0]
    scores -= scores.max(axis=0, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=0, keepdims=True)
    return scores


__all__ = ["LightPlan", "plan", "predict_light", "probabilities"]
