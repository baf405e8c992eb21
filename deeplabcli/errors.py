"""Every mistake a user can make has its own exception class.

Messages follow one shape: ``<what is wrong>. <how to fix it>`` so the CLI can print them as a
single ``Error: ...`` line. Code that is not user-facing raises ordinary Python exceptions.
"""

from __future__ import annotations


class DeeplabError(Exception):
    """Base class of all user-facing errors; the CLI prints ``Error: <message>`` and exits 1."""

    exit_code = 1


class ConfigError(DeeplabError):
    """An invalid model, training or evaluation configuration."""


class UnknownArchitectureError(ConfigError):
    """An architecture name that is not registered."""


class NondeterministicOpError(ConfigError):
    """``--deterministic`` with an operation PyTorch has no deterministic implementation of."""


class ScaleLimitError(ConfigError):
    """An inference scale that would enlarge an image beyond the pixel limit for network inputs."""


class TrainingDivergedError(DeeplabError):
    """A training loss that became NaN or infinite; nothing after the last good save is kept."""

    def __init__(self, loss: float, iteration: int, lr: float, out: object, saved: int) -> None:
        super().__init__(
            f"the training loss became {loss} at iteration {iteration} (lr {lr:.3g}), so the "
            f"training diverged; {out} keeps its checkpoint of iteration {saved} and nothing "
            "after it. Train again with a lower --lr, in another --out or with --overwrite."
        )
        self.details = (loss, iteration, lr, out, saved)

    def __reduce__(self) -> tuple[type, tuple[float, int, float, object, int]]:
        return type(self), self.details


class UnknownModelError(DeeplabError):
    """A model reference that is neither a card name, a local path nor a Hub repository."""


class ModelLoadError(DeeplabError):
    """Weights that exist but cannot be loaded (bad format, key or shape mismatch)."""


class DownloadError(DeeplabError):
    """A download that failed or could not be attempted (offline, network, HTTP error)."""


class IntegrityError(DownloadError):
    """A downloaded or cached file whose size or sha256 does not match what was expected."""


class UnsafeFileError(ModelLoadError):
    """A file that would need arbitrary code execution (a non-weights pickle) to load."""


class ConversionError(ModelLoadError):
    """Foreign weights (torchvision, transformers, TFLite) that cannot be converted."""


class ClassCountMismatchError(ModelLoadError):
    """Weights for a different number of classes than the data set or option asks for."""


class ImageReadError(DeeplabError):
    """A file that is not a readable image (missing, empty, truncated, too large, not an image)."""


class VideoReadError(DeeplabError):
    """A file that is not a readable video (not a video, no video stream, undecodable)."""


class OutputWriteError(DeeplabError):
    """An output location that cannot be written."""


class DiskFullError(OutputWriteError):
    """No space left on the device (or quota) while writing ``path``; nothing half-written is
    kept."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"no space left on device while writing {path}. Free space on that disk or choose "
            "another output location."
        )
        self.path = path

    def __reduce__(self) -> tuple[type, tuple[object]]:  # pickled between ranks
        return type(self), (self.path,)


class ReportWriteError(OutputWriteError):
    """A report that could not be written after the work it reports on was done: ``result``
    holds what was computed, so the caller can still show it."""

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[type, tuple[str, object]]:
        return type(self), (str(self), self.result)


class DatasetError(DeeplabError):
    """A data set that is missing, empty or malformed."""


class MaskFormatError(DatasetError):
    """A label mask that is not a class-index image (e.g. an RGB colour mask)."""


class LabelValueError(DatasetError):
    """A label mask with values outside ``[0, num_classes) ∪ {255}``."""


class SizeMismatchError(DatasetError):
    """An image and its mask with different sizes."""


class RunDirectoryError(DeeplabError):
    """A training run directory that holds another run, or no run to resume."""


class InsufficientMemoryError(DeeplabError):
    """A setting (crop size, batch size) that needs more memory than the device has."""


class MissingDependencyError(DeeplabError):
    """An optional dependency (an extra such as ``sbd`` or ``report``) that is not installed."""


class Interrupted(DeeplabError):
    """A run stopped by a signal after saving its state; exit code 128 + signal number."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: The optional extras (pyproject's ``[project.optional-dependencies]``) → what each installs.
EXTRAS: dict[str, str] = {
    "tflite": "tflite",
    "report": "matplotlib",
    "sbd": "scipy",
    "tensorboard": "tensorboard",
    "video": "av",
    "onnx": "onnx onnxruntime",
    "openvino": "openvino onnx nncf",
}


def extra_hint(extra: str) -> str:
    """How to install extra ``extra`` for every way deeplabcli can be installed: from its
    checkout (not yet on PyPI), into a pipx install, and once published.

    >>> extra_hint("sbd")  # doctest: +ELLIPSIS
    'Install it from the deeplabcli checkout with pip install ".[sbd]" (pipx: pipx inject ...'
    """
    return (
        f'Install it from the deeplabcli checkout with pip install ".[{extra}]" '
        f"(pipx: pipx inject deeplabcli {EXTRAS[extra]}; "
        f'from PyPI once published: pip install "deeplabcli[{extra}]")'
    )
