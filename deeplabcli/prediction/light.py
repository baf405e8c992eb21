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
Images go through the network one at a time each (whatever ``--batch-size``), on
:func:`choose_streams` streams side by side; decoding and writing overlap the network on
background threads.
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
from ..config.constants import SMALL_MODEL_BYTES, STREAMED_RUNTIMES, available_cpus
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
from ..runtimes.extras import (
    auto_backend,
    backend_installed,
    cuda_present,
    native_bf16,
    require_backend,
)
from ..runtimes.postprocess import class_map, probabilities
from ..runtimes.preprocess import preprocess
from ..runtimes.sessions import RuntimeNetwork
from ..weights.shipped import shipped_export
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
    shipped = shipped_export(model_ref, backend=config.backend, device=config.device,
                             output_stride=config.output_stride)  # fmt: skip
    if shipped is not None:  # the default model's int8 export, shipped with the package
        return LightPlan(shipped, "onnxruntime")
    backend = auto_backend(config.device) if config.backend == "auto" else config.backend
    if backend not in LIGHT_BACKENDS:
        return None
    path = lookup_reference(model_ref, backend, config.output_stride)
    if path is None or (config.backend == "auto" and _runs_bf16(path, config)):
        return None  # (a large model in bfloat16: the pipeline picks its backend)
    return LightPlan(path, backend)


def _runs_bf16(path: Path, config: PredictConfig) -> bool:
    """Whether the pipeline would run the model of the float export ``path`` in bfloat16
    (:mod:`deeplabcli.inference.precision`: large, on a CPU with native bfloat16)."""
    large = path.stat().st_size > SMALL_MODEL_BYTES  # an ONNX file: about its weights' bytes
    return config.amp is not False and large and native_bf16()


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
    ``config.streams`` images go through the network side by side (None:
    :func:`choose_streams`). ``threads``: the runtime's intra-op threads (None: the available
    cores shared between the streams; on one stream the runtime's own choice, all cores)."""
    config = config or PredictConfig()
    planning = time.perf_counter()  # the images to run decide the session's threads
    jobs, problems = plan_outputs(inputs, config.output, output_suffix(config.format))
    todo, skipped = [], []
    for job in jobs:
        (skipped if job.output.exists() and not config.overwrite else todo).append(job)
    streams = choose_streams(light, len(todo), config.streams)
    if threads is None and streams > 1:
        threads = max(1, available_cpus() // streams)
    planning = time.perf_counter() - planning
    model = load_exported(light.path, light.backend, threads=threads)
    if not _takes_every_image(model):  # the pipeline checks each image's input size (torch)
        from .pipeline import predict_files

        config = config.replace(backend=light.backend, streams=streams)  # as the session is
        return predict_files(model, inputs, config, on_result=on_result, progress=progress)
    model_config = model.config
    check_format(config.format, model_config.num_classes)
    start = time.perf_counter() - planning
    results: list[PredictResult] = []
    total = len(jobs) + len(problems)
    with _progress_bar(total, enabled=progress and total > 1) as advance:

        def finish(result: PredictResult) -> None:
            if result.status == "written":
                result.backend = model.backend
                result.precision = model.precision
            results.append(result)
            if on_result is not None:
                on_result(result)
            advance()

        for name, message in problems:
            finish(PredictResult(input=name, status="failed", message=message))
        for job in skipped:
            finish(skipped_result(job))
        _Run(model.network, model_config, config, finish, streams).run(todo)
    counts = [sum(r.status == s for r in results) for s in ("written", "skipped", "failed")]
    return PredictSummary(results, *counts, time.perf_counter() - start)


def choose_streams(light: LightPlan, images: int, requested: int | None = None) -> int:
    """How many of ``images`` images go through ``light``'s network side by side:
    ``requested`` (``--streams``; at most ``images``), or (None) 2 for a small exported file
    (:data:`SMALL_MODEL_BYTES`, with an IR's .bin) on a :data:`STREAMED_RUNTIMES` backend with
    2+ images and 2+ available cores, else 1: the rule of
    :func:`deeplabcli.inference.streams.planned_streams` at batch size 1."""
    if requested is not None:
        return max(1, min(requested, images))
    if light.backend not in STREAMED_RUNTIMES or images < 2 or available_cpus() < 2:
        return 1
    files = {light.path, light.path.with_suffix(".bin")}  # (an .onnx file has no .bin)
    size = sum(f.stat().st_size for f in files if f.is_file())
    return 2 if size <= SMALL_MODEL_BYTES else 1


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
    """Decode (threads) → network and post-processing (this thread; with ``streams`` > 1 that
    many threads, one image each) → write (threads); each image's record is reported in input
    order once it is written. At most a window of images is in flight."""

    def __init__(
        self,
        network: RuntimeNetwork,
        model_config: ModelConfig,
        config: PredictConfig,
        finish: Callable[[PredictResult], None],
        streams: int = 1,
    ) -> None:
        self.network = network
        self.prep = model_config.preprocessing
        self.align_corners = bool(model_config.align_corners)
        self.class_names = tuple(model_config.class_names)
        self.palette = palette_for(model_config.num_classes)
        self.config = config
        self.finish = finish
        self.streams = streams

    def run(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        window = max(2, self.config.workers, 2 * self.streams)
        queue = iter(jobs)
        with (
            ThreadPoolExecutor(self.config.workers, thread_name_prefix="deeplab-io") as pool,
            _network_pool(self.streams) as net,
        ):
            loads: deque[Future[_Decoded | PredictResult]] = deque()
            outcomes: deque[Future[_Outcome]] = deque()  # in input order
            while True:
                while len(loads) < window and (job := next(queue, None)):
                    loads.append(pool.submit(_decode, job))
                if not loads:
                    break
                loaded = loads.popleft().result()
                if isinstance(loaded, PredictResult):
                    outcomes.append(_done(loaded))
                elif net is None:
                    outcomes.append(pool.submit(self._write, loaded, *self._segment(loaded)))
                else:  # the stream submits the write when the network is done
                    outcomes.append(net.submit(self._segment_and_write, loaded, pool))
                while outcomes and (_ready(outcomes[0]) or len(outcomes) > window):
                    self.finish(_result(outcomes.popleft()))
            while outcomes:
                self.finish(_result(outcomes.popleft()))

    def _segment_and_write(self, item: _Decoded, pool: ThreadPoolExecutor) -> Future[PredictResult]:
        return pool.submit(self._write, item, *self._segment(item))

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


#: an image's record, or (from a network stream) the future of its write
_Outcome = PredictResult | Future[PredictResult]


def _done(result: PredictResult) -> Future[_Outcome]:
    future: Future[_Outcome] = Future()
    future.set_result(result)
    return future


def _ready(outcome: Future[_Outcome]) -> bool:
    """Whether ``outcome``'s record can be taken without waiting (or it failed)."""
    if not outcome.done():
        return False
    if outcome.exception() is not None:
        return True
    value = outcome.result()
    return not isinstance(value, Future) or value.done()


def _result(outcome: Future[_Outcome]) -> PredictResult:
    value = outcome.result()
    return value.result() if isinstance(value, Future) else value


@contextmanager
def _network_pool(streams: int) -> Iterator[ThreadPoolExecutor | None]:
    """``streams`` threads that each run one image through the network at a time (one
    session is safe to call from several threads; OpenVINO keeps a request per thread), or
    None for one stream, which runs on the calling thread."""
    if streams == 1:
        yield None
        return
    with ThreadPoolExecutor(streams, thread_name_prefix="deeplab-net") as pool:
        yield pool


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


__all__ = ["LightPlan", "choose_streams", "plan", "predict_light", "probabilities"]
