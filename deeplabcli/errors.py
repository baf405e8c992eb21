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


class OutputWriteError(DeeplabError):
    """An output location that cannot be written."""


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
