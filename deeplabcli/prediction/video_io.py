"""Reading and writing videos with PyAV (the optional extra ``deeplabcli[video]``).

:class:`VideoReader` decodes a video's first video stream into RGB frames and tells, once they
are read, whether the stream ended early (a truncated or damaged file). :class:`VideoWriter`
encodes frames at the source's rate and size: class masks losslessly (FFV1 in ``.mkv``, or
H.264 RGB at QP 0 in ``.mp4``/``.mov``), overlays as H.264 (CRF 18).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, OutputWriteError, VideoReadError, extra_hint

#: Suffixes of the files ``deeplab predict`` reads as videos (named explicitly, not searched).
VIDEO_SUFFIXES = frozenset((
    ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
    ".m2ts", ".mts", ".3gp", ".ogv",
))  # fmt: skip
#: Suffixes it writes videos as, and their PyAV container formats.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: Formats a video can be written in.
VIDEO_FORMATS = ("palette", "index", "overlay")


def is_video_name(path: Path) -> bool:
    """True if ``path``'s suffix is one of :data:`VIDEO_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def require_av() -> ModuleType:
    """The ``av`` module, or :class:`MissingDependencyError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise MissingDependencyError(
            f"reading and writing videos needs PyAV, which is not installed. {extra_hint('video')}."
        ) from None
    return av


def _reason(error: Exception) -> str:
    return str(getattr(error, "strerror", None) or error).rstrip(".")


class VideoReader:
    """The first video stream of ``path``: ``size`` (H, W), ``rate`` (frames per second),
    ``expected`` frames (0 when the file does not say), and :meth:`frames`. Raises
    :class:`VideoReadError` for a file that is not a video."""

    def __init__(self, path: Path) -> None:
        av = require_av()
        self.path = path
        self.error: str | None = None  # why decoding stopped early, if it did
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise VideoReadError(
                f"{path}: not a video that can be read ({_reason(error)}). Give a video file "
                "(.mp4, .mkv, .mov, .avi, .webm, ...)."
            ) from None
        kind = self.container.format.name
        has_video = bool(self.container.streams.video)
        if not has_video or kind.endswith("_pipe") or kind == "image2":
            self.container.close()
            what = f"an image ({kind.removesuffix('_pipe')})" if has_video else "no video stream"
            raise VideoReadError(
                f"{path}: {what}, not a video. Predict images under their own suffix "
                "(.png, .jpg, ...), and give videos with a video stream."
            )
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rate = Fraction(self.stream.average_rate or self.stream.guessed_rate or 25)
        self.size = (int(self.stream.codec_context.height), int(self.stream.codec_context.width))
        self.expected = int(self.stream.frames or 0) or self._from_duration()
        self._counted = bool(self.stream.frames)  # an exact count, not an estimate
        self._av = av

    def _from_duration(self) -> int:
        if self.stream.duration and self.stream.time_base:
            seconds = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration and len(self.container.streams) == 1:
            seconds = self.container.duration / 1_000_000  # AV_TIME_BASE
        else:
            return 0
        return round(seconds * self.rate)

    def frames(self) -> Iterator[np.ndarray]:
        """The frames, uint8 RGB (H, W, 3), in order; a decoding error or a change of frame
        size ends them and is kept in :attr:`error`."""
        try:
            for frame in self.container.decode(self.stream):
                if (frame.height, frame.width) != self.size:
                    self.error = f"the frame size changes to {frame.width}×{frame.height}"
                    return
                yield frame.to_ndarray(format="rgb24")
        except self._av.error.FFmpegError as error:
            self.error = _reason(error)

    def ended_early(self, decoded: int) -> bool:
        """True if decoding stopped on an error, or ``decoded`` frames fall short of what the
        file declares (its frame count; or its duration, within a frame for rounding)."""
        if self.error is not None:
            return True
        return decoded < self.expected - (0 if self._counted else 1)

    def close(self) -> None:
        self.container.close()


def _has_encoder(av: ModuleType, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV builds without it raise UnknownCodecError (not exported)
        return False
    return True


def encoder_for(suffix: str, fmt: str, size: tuple[int, int]) -> tuple[str, str, dict[str, str]]:
    """(codec, pixel format, options) that write ``fmt`` frames of ``size`` (H, W) into a
    ``suffix`` container: lossless FFV1 in .mkv; in .mp4/.mov, lossless H.264 RGB (QP 0) for
    masks (an index mask in all three channels) and H.264 (CRF 18) for overlays."""
    av = require_av()
    if suffix == ".mkv":
        return "ffv1", "gray" if fmt == "index" else "bgr0", {}
    if fmt != "overlay":
        if not _has_encoder(av, "libx264rgb"):
            raise OutputWriteError(
                f"this PyAV build cannot write lossless {suffix} masks (no libx264rgb). "
                "Write a .mkv video (lossless FFV1) instead."
            )
        return "libx264rgb", "rgb24", {"qp": "0"}
    if not _has_encoder(av, "libx264"):
        return "mpeg4", "yuv420p", {"qscale": "2"}
    even = size[0] % 2 == 0 and size[1] % 2 == 0  # 4:2:0 needs even sides
    return "libx264", "yuv420p" if even else "yuv444p", {"crf": "18"}


class VideoWriter:
    """Encodes frames into ``path`` (a ``suffix`` container, e.g. a temporary name) at
    ``rate`` frames per second; ``name`` is the output the messages call it."""

    def __init__(
        self,
        path: Path,
        name: Path,
        fmt: str,
        rate: Fraction,
        size: tuple[int, int],
    ) -> None:
        self._av = require_av()
        self.name = name
        self.fmt = fmt
        suffix = name.suffix.lower()
        self.codec, pix_fmt, options = encoder_for(suffix, fmt, size)
        self.container: Any = None
        with self._encoding():
            self.container = self._av.open(str(path), "w", format=CONTAINERS[suffix])
            self.stream = self.container.add_stream(self.codec, rate=rate)
            self.stream.height, self.stream.width = size
            self.stream.pix_fmt = pix_fmt
            self.stream.options = options

    @contextmanager
    def _encoding(self) -> Iterator[None]:
        """PyAV's encoding errors as one :class:`OutputWriteError`; OS errors (a full disk, a
        missing folder) pass on to :func:`~deeplabcli.prediction.outputs.write_file`."""
        try:
            yield
        except self._av.error.FFmpegError as error:
            if isinstance(error, OSError):
                raise
            raise OutputWriteError(
                f"cannot encode {self.name} with {self.codec} ({_reason(error)}). "
                "Write a .mkv video (lossless FFV1) instead."
            ) from None

    def write(self, picture: np.ndarray) -> None:
        """Add one frame: uint8 (H, W) class indices or (H, W, 3) RGB."""
        if picture.ndim == 2 and self.codec != "ffv1":
            picture = np.repeat(picture[:, :, None], 3, axis=2)  # H.264 RGB: R = G = B = index
        kind = "gray" if picture.ndim == 2 else "rgb24"
        with self._encoding():
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format=kind)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        with self._encoding():
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()

    def abandon(self) -> None:
        """Close the file after a failure (the caller removes it)."""
        if self.container is not None:  # already failed: the first error is the one to report
            with suppress(Exception):
                self.container.close()
