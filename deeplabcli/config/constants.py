"""Constants shared by every layer: the void label, the VOC classes, normalisations, choices."""

from __future__ import annotations

import os

IGNORE_INDEX = 255

#: PASCAL VOC 2012 class names in index order (paper, "PASCAL VOC class order").
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: The classes the paper duplicates in hard-image bootstrapping (Sec. 4.4).
HARD_CLASSES: tuple[str, ...] = ("bicycle", "chair", "diningtable", "pottedplant", "sofa")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Google's models scale pixels to [-1, 1]: (x - 127.5) / 127.5 == (x/255 - 0.5) / 0.5.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

BACKBONES = ("resnet50", "resnet101", "resnet_tiny", "mobilenetv2")
HEADS = ("paper", "torchvision", "mobile")
DILATION_CONVENTIONS = ("paper", "torchvision")
RESIZE_POLICIES = ("none", "fit")


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """VOC's names for 21 classes, otherwise ``class_0 .. class_{n-1}``."""
    if num_classes == len(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what a container or ``taskset``
    grants), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cap: int = 4) -> int:
    """How many data-loading workers to start by default: one per available CPU, at most
    ``cap`` (more than the CPUs only compete with the main process, and torch warns)."""
    return min(cap, available_cpus())


#: Models (or exported networks) with at most this many bytes of parameters are "small": they
#: run two CPU streams of one thread each by default, on torch and on :data:`STREAMED_RUNTIMES`
#: (measurements: ``inference/streams.py``); larger ones may run in bfloat16
#: (``inference/precision.py``).
SMALL_MODEL_BYTES = 32 * 2**20
#: Runtime backends whose small models run two streams (OpenVINO keeps one: ``streams.py``).
STREAMED_RUNTIMES = ("onnxruntime",)

#: The data set kinds that ``open_dataset`` (``--dataset``) accepts.
DATASETS = ("voc", "folder")
