"""Model cards: pretrained checkpoints described as data (one small TOML file each in weights/).

A card names a checkpoint and says where its bytes live (a Hugging Face Hub repo + revision +
filename, a URL, or a file shipped beside the card: the embedded default), how to verify them (sha256 and size where known), what format they are in,
which architecture and classes they carry, how inputs are preprocessed, what the publisher
reported about them, and under which licence. Cards never hold weights; the one weights file
that ships, the embedded default model, sits beside its card with its licence files.

The cards shipped with deeplabcli live in the top-level ``weights/`` directory of the source
tree, which the wheel installs as ``deeplabcli/weights/card_files``. ``DEEPLAB_CARDS_DIR`` points the
registry at another directory (tests, private model zoos).
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import VOC_CLASSES, Preprocessing
from ..errors import ConfigError, UnknownModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Weight formats a card can name.
FORMATS = ("ours", "transformers", "torchvision", "torchvision-backbone", "tflite")
#: Formats that hold a whole segmentation model (the rest are backbones for training).
MODEL_FORMATS = ("ours", "transformers", "torchvision", "tflite")
CARDS_ENV = "DEEPLAB_CARDS_DIR"


@dataclass(frozen=True)
class Metric:
    """A number the publisher reported (not measured by us), with where it comes from."""

    name: str  # e.g. "mIoU"
    value: float  # as published, in percent for mIoU and accuracies
    dataset: str  # e.g. "PASCAL VOC 2012 val"
    source: str  # URL or document the number comes from
    extra: dict[str, float] = field(default_factory=dict)  # further published numbers

    def __str__(self) -> str:
        return f"{self.value:g} {self.name} ({self.dataset})"


@dataclass(frozen=True)
class ShippedExport:
    """The card's model exported for a runtime, shipped beside the card (``[export]``): what
    ``--backend auto`` runs for it on a CPU where that runtime is installed."""

    file: str  # beside the card
    sha256: str
    backend: str  # the runtime that runs it ("onnxruntime")
    output_stride: int  # the OS the graph was exported at
    size: int | None = None


@dataclass(frozen=True)
class ModelCard:
    """One named pretrained checkpoint (like timm's pretrained cfg)."""

    name: str
    description: str
    format: str  # one of FORMATS
    architecture: str  # registered architecture the weights fit (e.g. deeplabv3_resnet50)
    backbone: str  # for listings: resnet50, resnet101, mobilenetv2
    license: str
    # --- where the bytes live: a Hub repo (+ revision + filename), a URL, or a file beside ---
    repo: str | None = None
    revision: str = "main"  # a commit hash where known
    filename: str | None = None  # the weights file in the repo (config.json is fetched too)
    url: str | None = None
    file: str | None = None  # a weights file shipped beside the card (the embedded model)
    sha256: str | None = None  # hex digest of the weights file, where known
    size: int | None = None  # bytes, where known
    # --- what the weights mean ---
    classes: tuple[str, ...] = ()  # () = whatever the weights say
    preprocessing: Preprocessing | None = None  # None = whatever the converter records
    metric: Metric | None = None
    default: bool = False  # the model predict and eval use when no --model is given
    mirrors: tuple[str, ...] = ()  # other places that publish the same weights (informational)
    license_files: tuple[str, ...] = ()  # licence and notice files beside the card
    upstream: dict[str, str] = field(default_factory=dict)  # what `file` was made from, and how
    export: ShippedExport | None = None  # the model exported for a runtime, shipped beside
    notes: str = ""
    path: Path | None = None  # the card file itself

    @property
    def is_model(self) -> bool:
        """True for segmentation models, False for backbone initialisations."""
        return self.format in MODEL_FORMATS

    @property
    def source(self) -> str:
        """Where the weights come from, in one string: ``repo@revision/filename``, the URL, or
        ``embedded:<file>`` for a file shipped with the package."""
        if self.repo:
            return f"{self.repo}@{self.revision}/{self.filename}"
        if self.file:
            return f"embedded:{self.file}"
        return str(self.url)

    @property
    def embedded(self) -> bool:
        """True for a card whose weights ship with the package (nothing to download)."""
        return self.file is not None

    def beside(self, name: str) -> Path:
        """The path of file ``name`` in the card's directory (its weights or licence files)."""
        return (self.path.parent if self.path else cards_dir()) / name

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) or None


def cards_dir() -> Path:
    """The directory the registry reads: ``$DEEPLAB_CARDS_DIR``, else the installed
    ``deeplabcli/weights/card_files``, else the source tree's ``weights/``."""
    override = os.environ.get(CARDS_ENV)
    if override:
        return Path(override).expanduser()
    installed = Path(__file__).resolve().parent / "card_files"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "weights"


def list_cards(directory: Path | None = None) -> list[ModelCard]:
    """Every card in ``directory`` (default :func:`cards_dir`), sorted by name."""
    directory = directory or cards_dir()
    if not directory.is_dir():
        raise ConfigError(
            f"model card directory {directory} does not exist. "
            f"Reinstall deeplabcli or point {CARDS_ENV} at a directory of .toml cards."
        )
    cards = [read_card(path) for path in sorted(directory.glob("*.toml"))]
    names = [c.name for c in cards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"model cards {', '.join(duplicates)} are defined twice in {directory}. "
            "Give every card a unique name."
        )
    return sorted(cards, key=lambda c: c.name)


def get_card(name: str, directory: Path | None = None) -> ModelCard:
    """The card called ``name``; an :class:`UnknownModelError` suggests close names."""
    cards = {c.name: c for c in list_cards(directory)}
    if name in cards:
        return cards[name]
    close = difflib.get_close_matches(name, list(cards), n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}. {hint}Run `deeplab models` to list the names, "
        "or pass a checkpoint directory, a weights file or a Hub repo (owner/name)."
    )


def find_card(name: str, directory: Path | None = None) -> ModelCard | None:
    """The card called ``name``, or None."""
    return next((c for c in list_cards(directory) if c.name == name), None)


def default_card(directory: Path | None = None) -> ModelCard:
    """The one card marked ``default = true`` (the model predict and eval use by default)."""
    defaults = [c for c in list_cards(directory) if c.default]
    if len(defaults) != 1:
        found = ", ".join(c.name for c in defaults) or "none"
        raise ConfigError(
            f"exactly one model card must be marked default = true, found {found}. "
            "Fix the cards or pass --model explicitly."
        )
    return defaults[0]


def read_card(path: Path) -> ModelCard:
    """Parse and validate one TOML card; any problem is a :class:`ConfigError` naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"model card {path} cannot be read ({error}). Fix the file.") from None
    try:
        return _card_from_dict(data, path)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"model card {path} is invalid ({error}). Fix the file.") from None


def _card_from_dict(data: dict[str, Any], path: Path) -> ModelCard:
    source = dict(data.get("source", {}))
    metric = data.get("metric")
    classes = data.get("classes", ())
    if classes == "voc":
        classes = VOC_CLASSES
    preprocessing = data.get("preprocessing")
    card = ModelCard(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        format=str(data["format"]),
        architecture=str(data["architecture"]),
        backbone=str(data.get("backbone", "")),
        license=str(data["license"]),
        repo=source.get("repo"),
        revision=str(source.get("revision", "main")),
        filename=source.get("filename"),
        url=source.get("url"),
        file=source.get("file"),
        sha256=source.get("sha256"),
        size=int(source["size"]) if "size" in source else None,
        classes=tuple(str(c) for c in classes),
        preprocessing=Preprocessing(**preprocessing) if preprocessing else None,
        metric=_metric(metric) if metric else None,
        default=bool(data.get("default", False)),
        mirrors=tuple(str(m) for m in data.get("mirrors", ())),
        license_files=tuple(str(f) for f in data.get("license_files", ())),
        upstream={str(k): str(v) for k, v in data.get("upstream", {}).items()},
        export=_shipped_export(data["export"]) if "export" in data else None,
        notes=str(data.get("notes", "")).strip(),
        path=path,
    )
    _validate(card)
    return card


def _shipped_export(data: dict[str, Any]) -> ShippedExport:
    return ShippedExport(
        file=str(data["file"]),
        sha256=str(data["sha256"]),
        backend=str(data["backend"]),
        output_stride=int(data["output_stride"]),
        size=int(data["size"]) if "size" in data else None,
    )


def _metric(data: dict[str, Any]) -> Metric:
    known = {"name", "value", "dataset", "source"}
    extra = {k: float(v) for k, v in data.items() if k not in known}
    return Metric(
        name=str(data["name"]),
        value=float(data["value"]),
        dataset=str(data["dataset"]),
        source=str(data["source"]),
        extra=extra,
    )


def _validate(card: ModelCard) -> None:
    if card.format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {card.format!r}")
    if sum(bool(v) for v in (card.repo, card.url, card.file)) != 1:
        raise ValueError("[source] needs exactly one of repo, url or file")
    shipped = card.export
    if shipped is not None and (shipped.backend != "onnxruntime" or not card.file):
        raise ValueError("[export] ships onnxruntime exports of embedded models only")
    for name in (card.file, *card.license_files, shipped.file if shipped else None):
        if name is not None and (Path(name).name != name or name.startswith(".")):
            raise ValueError(f"{name!r} must be the name of a file beside the card")
    if card.file and (card.format != "ours" or card.sha256 is None):
        raise ValueError("[source] file needs format 'ours' and its sha256")
    if card.repo and not card.filename:
        raise ValueError("[source] repo needs a filename (the weights file)")
    if card.url and card.format in ("ours", "transformers"):
        raise ValueError(f"format {card.format!r} needs a Hub repo (it has a config.json)")
    for digest in (card.sha256, shipped.sha256 if shipped else None):
        if digest is not None and (
            len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise ValueError("sha256 must be 64 lower-case hex digits")
