"""``deeplab eval`` as a library: the paper's evaluation protocol over a segmentation data set.

Every image is segmented whole, at its own size, by a
:class:`~deeplabcli.inference.segmenter.Segmenter` (the model's preprocessing, an output stride,
multi-scale + left-right flip inference averaging class probabilities; paper Sec. 4.3), and its
(label, prediction) pixel pairs go into one confusion matrix, from which
:func:`~deeplabcli.evaluation.metrics.compute_metrics` derives per-class IoU, mIoU, pixel accuracy, mean
class accuracy and frequency-weighted IoU. Pixels labelled 255 are never counted.

Images are read and validated by background worker processes
(:class:`~deeplabcli.data.SegmentationLoader`), so the network does not wait on decoding; a bad
file stops the run with its one-line error naming it. Under ``torchrun`` each rank scores every
``world``-th image and the confusion matrices are summed, so every rank ends with the same
metrics; the CLI prints and writes the report on rank 0 only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..config import EvalConfig, InferenceConfig, inference_options
from ..data import open_dataset
from ..data.check import duplicate_ids
from ..data.dataset import SegmentationDataset
from ..data.masks import SHOW_AT_MOST, summarise
from ..distributed import (
    World,
    all_gather_objects,
    all_reduce_sum,
    current_world,
    device_for,
    process_group,
)
from ..errors import (
    ClassCountMismatchError,
    DatasetError,
    DeeplabError,
    Interrupted,
    OutputWriteError,
    ReportWriteError,
)
from ..inference.backends import InferenceModel, plan_backend
from ..inference.device import device_of
from ..inference.segmenter import Segmenter
from ..inference.streams import planned_streams
from ..models import DeepLabV3
from ..progress import progress_bar
from .metrics import SegmentationMetrics, compute_metrics
from .result import EvalResult, ImageScore, WorstImage
from .scoring import Scorer

__all__ = ["EvalResult", "ImageScore", "WorstImage", "check_classes", "evaluate",
           "evaluate_dataset", "run_evaluation"]  # fmt: skip


def check_classes(model: InferenceModel, dataset: SegmentationDataset) -> None:
    """Raise :class:`ClassCountMismatchError` unless model and data set have as many classes."""
    ours, theirs = model.config.num_classes, dataset.num_classes
    if ours != theirs:
        raise ClassCountMismatchError(
            f"the model predicts {ours} classes but the {dataset.name} data set "
            f"(split '{dataset.split}') has {theirs}. Evaluate a model trained for this data "
            "set's classes, or fine-tune one on it with `deeplab finetune`."
        )


def refuse_duplicates(dataset: SegmentationDataset) -> None:
    """Raise :class:`DatasetError` if the split lists an image more than once: its pixels
    would count twice in the confusion matrix (a bootstrapped list is for training)."""
    repeated = duplicate_ids(dataset)
    if repeated:
        listed = summarise([f"{i} ({n}×)" for i, n in repeated.items()], SHOW_AT_MOST)
        raise DatasetError(
            f"split '{dataset.split}' lists {len(repeated)} images more than once ({listed}), "
            "so the evaluation would count them twice. Evaluate a list that names each image "
            "once (bootstrapped lists are for training)."
        )


def evaluate(
    model: InferenceModel,
    dataset: SegmentationDataset,
    config: InferenceConfig | None = None,
    *,
    workers: int = 2,
    optimize: bool = True,
    limit: int | None = None,
    progress: bool = False,
    world: World | None = None,
    **options: Any,
) -> SegmentationMetrics:
    """Metrics of ``model`` on ``dataset`` (:func:`deeplabcli.data.open_dataset`) with the
    paper's protocol: whole images at the output stride, scales and flips of ``config`` (an
    :class:`~deeplabcli.config.InferenceConfig`, or its fields by keyword: ``output_stride=8,
    flip=True``; by default the model's own OS on the model's own device, no AMP).

    ``optimize`` runs a BN-folded channels-last copy; ``workers`` background processes read
    the images; ``limit`` takes the first N images. Under ``torchrun`` the images are split
    between ranks and every rank gets the full result.

    >>> from deeplabcli import build_model, evaluate            # doctest: +SKIP
    >>> evaluate(model, open_dataset("voc", "VOCdevkit", "val"), output_stride=8).miou
    """
    on_torch = isinstance(model, DeepLabV3) and options.get("backend") in (None, "torch")
    if config is None and options.get("device") is None and on_torch:
        options = {**options, "device": device_of(model)}
    return evaluate_dataset(
        model,
        dataset,
        inference_options(config, options, amp=False),
        workers=workers,
        optimize=optimize,
        limit=limit,
        progress=progress,
        world=world,
    ).metrics


def run_evaluation(
    config: EvalConfig, *, model: InferenceModel | None = None, progress: bool = True
) -> EvalResult:
    """What ``deeplab eval`` does: open the data set, load ``config.model`` (unless ``model``
    is given; an exported ``.onnx``/``.xml`` file too), check that the class counts agree and
    that the report can be written (before any work), evaluate on ``config.backend``, and write
    the report (rank 0). Raises the first bad file's error; a report that cannot be written
    after all raises :class:`ReportWriteError` holding the result."""
    from ..inference.backends import load_inference_model
    from ..weights.resolve import default_model_name
    from .report import check_report_dir, require_matplotlib, write_report

    dataset = open_dataset(config.dataset, config.data_root, config.split_name)
    refuse_duplicates(dataset)
    if config.report is not None:
        require_matplotlib()
        check_report_dir(config.report)
    inplace = model is None  # a model loaded for this run may be optimised in place
    if model is None:
        model = load_inference_model(config.model, config)
        name = config.model or default_model_name()
    else:
        name = config.model or str(model.provenance.get("source") or model.config.arch)
    reference = config.model if inplace else False  # what the model was loaded from
    check_classes(model, dataset)
    result = evaluate_dataset(
        model,
        dataset,
        config.inference,
        workers=config.workers,
        limit=config.limit,
        progress=progress,
        keep_worst=config.worst if config.report is not None else 0,
        model_name=name,
        inplace=inplace,
        reference=reference,
    )
    if config.report is not None and current_world().is_main:
        try:
            write_report(result, dataset, config.report)
        except OutputWriteError as error:  # the numbers are not lost with the report
            raise ReportWriteError(str(error), result) from None
    return result


def evaluate_dataset(
    model: InferenceModel,
    dataset: SegmentationDataset,
    config: InferenceConfig | None = None,
    *,
    workers: int = 2,
    optimize: bool = True,
    limit: int | None = None,
    progress: bool = False,
    keep_worst: int = 0,
    model_name: str = "model",
    world: World | None = None,
    inplace: bool = False,
    reference: str | os.PathLike | bool | None = False,
    **options: Any,
) -> EvalResult:
    """:func:`evaluate` with everything it measured: per-image scores, the ``keep_worst``
    lowest-mIoU predictions, timings. ``world`` given: use it (the caller owns the process
    group), else join torchrun's group if launched by it. ``inplace``: optimise ``model``
    itself instead of a copy (half the weight memory; the model is then fit only for
    inference). ``config.backend`` says where the network runs (``reference``: the model
    reference, see :class:`~deeplabcli.inference.Segmenter`)."""
    start = time.perf_counter()
    check_classes(model, dataset)
    config = inference_options(config, options, amp=False)
    backend, resolved = plan_backend(model, config)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    with _joined(world, resolved) as world:
        indices = list(range(world.rank, count, world.size))
        batches = -(-len(indices) // config.batch_size)  # a runtime's threads are set now
        segmenter = Segmenter(
            model,
            config.replace(
                device=device_for(world, resolved), backend=backend,
                streams=planned_streams(model, config, backend, batches),
            ),
            optimize=optimize,
            inplace=inplace,
            reference=reference,
        )  # fmt: skip
        scorer = Scorer(segmenter, dataset, keep_worst)
        failure: DeeplabError | None = None
        disable = not progress or not world.is_main
        with progress_bar(len(indices), "Evaluating", disable=disable, unit="img") as bar:
            try:
                scorer.run(indices, workers, bar)
            except DeeplabError as error:
                if not world.distributed or isinstance(error, Interrupted):
                    raise
                failure = error  # raised on every rank below, so none waits forever
        failures = [f for f in all_gather_objects(failure) if f is not None]
        if failures:
            raise failures[0]
        confusion = all_reduce_sum(scorer.matrix.matrix).cpu()
        scores = [s for part in all_gather_objects(scorer.scores) for s in part]
        worst = [w for part in all_gather_objects(scorer.worst()) for w in part]
    worst.sort(key=lambda w: (w.score.miou, w.score.index))
    return EvalResult(
        metrics=compute_metrics(confusion, dataset.class_names),
        model=model_name,
        output_stride=segmenter.config.output_stride,
        scales=segmenter.scales,
        flip=segmenter.flip,
        backend=segmenter.backend,
        precision=segmenter.precision,
        dataset=dataset.name,
        split=dataset.split,
        per_image=sorted(scores, key=lambda s: s.index),
        worst=worst[:keep_worst],
        seconds=time.perf_counter() - start,
        load_wait=scorer.load_wait,
        first_wait=scorer.first_wait,
        loop_seconds=scorer.loop_seconds,
    )


@contextmanager
def _joined(world: World | None, device: torch.device) -> Iterator[World]:
    """``world`` as given (the caller owns the process group), else torchrun's group."""
    if world is not None:
        yield world
    else:
        with process_group(device) as joined:
            yield joined
