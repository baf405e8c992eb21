"""Model references → models: the one resolver behind every ``--model`` option.

A reference is, in this order of precedence:

1. a local path: a checkpoint directory (ours), a transformers MobileNetV2 segmentation
   directory, or a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` / ``.tflite`` file;
2. a model-card name from ``weights/`` (``deeplab models`` lists them);
3. a Hugging Face Hub repo ``owner/name[@revision]`` in our format or transformers'.

>>> model = load_model("deeplabv3-mobilenetv2-voc")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import IntegrityError, ModelLoadError, OutputWriteError
from ..files import check_writable
from ..models import DeepLabV3
from ..runtimes.exported import EXPORTED_SUFFIXES, is_exported_path
from . import download as hub
from .cards import ModelCard, default_card, find_card, get_card
from .checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    is_checkpoint_config,
    make_provenance,
)
from .formats import (
    PICKLE_SUFFIXES,
    backbone_state_dict,
    layout,
    read_safetensors,
    read_weights,
    resnet_name,
    safe_torch_load,
)
from .integrity import sha256_file
from .loaders import (
    MODELS_HINT,
    TRANSFORMERS_WEIGHTS,
    build_ours,
    check_transformers_config,
    from_transformers_config,
    load_path,
    load_safetensors_file,
    load_tflite,
    read_json,
)

_HUB_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")

Ref = str | os.PathLike


def default_model_name() -> str:
    """The name of the card marked default (what predict and eval use without --model)."""
    return default_card().name


def load_model(ref: Ref | None = None, *, device: str | torch.device = "cpu") -> DeepLabV3:
    """The model a reference names, in eval mode on ``device``, with ``model.config`` and
    ``model.provenance``. ``None`` means the default model (see :func:`default_model_name`)."""
    model = _load(default_model_name() if ref is None else ref)
    return model.to(device).eval()


def _load(ref: Ref) -> DeepLabV3:
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_file() and is_exported_path(path):
        raise ModelLoadError(
            f"{text} is an exported model (ONNX or OpenVINO IR), with no torch weights for this "
            f"command. Run it with deeplab predict or deeplab eval (--model {text}), describe it "
            "with `deeplab info`, or use the model it was exported from here."
        )
    if path.exists():
        return load_path(path)
    card = find_card(text)
    if card is not None:
        return load_card_model(card)
    if _looks_like_path(text):
        raise ModelLoadError(
            f"{text} does not exist. Check the path, or run `deeplab models` for model names."
        )
    repo = parse_hub_ref(text)
    if repo is not None:
        return load_hub_model(*repo)
    get_card(text)  # raises UnknownModelError with a close-name suggestion
    raise AssertionError("unreachable")  # pragma: no cover


def _looks_like_path(text: str) -> bool:
    """True for references that can only mean a file (so a missing one is not a Hub repo)."""
    suffix = Path(text).suffix.lower()
    return (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or text.split("@", 1)[0].count("/") > 1
        or suffix in (*PICKLE_SUFFIXES, ".safetensors", ".tflite", ".json", *EXPORTED_SUFFIXES)
    )


def parse_hub_ref(text: str) -> tuple[str, str] | None:
    """``(repo_id, revision)`` for ``owner/name[@revision]``, else None."""
    match = _HUB_REF.match(text)
    return (match["repo"], match["revision"] or "main") if match else None


# ------------------------------------------------------------------------------ the Hub
def fetch_hub_files(
    repo_id: str, revision: str = "main", *, what: str | None = None, quiet: bool = False
) -> dict[str, Path]:
    """Download (or find in the cache) and verify a Hub repo's ``config`` and ``weights`` files,
    in our format or transformers' (``model.safetensors`` preferred to ``pytorch_model.bin``)."""
    what = what or f"{repo_id}@{revision}"
    config_path = _hub_file(repo_id, CONFIG_NAME, revision, what, quiet=quiet)
    document = read_json(config_path)
    commit = config_path.parent.name  # snapshot directories are named by commit hash
    if isinstance(document, dict) and is_checkpoint_config(document):
        weights = _hub_file(repo_id, WEIGHTS_NAME, commit, what, quiet=quiet)
    elif isinstance(document, dict) and "model_type" in document:
        check_transformers_config(document, f"Hub repo {repo_id}")
        safetensors, pickled = TRANSFORMERS_WEIGHTS
        weights = _hub_file(repo_id, safetensors, commit, what, missing_ok=True, quiet=quiet)
        weights = weights or _hub_file(repo_id, pickled, commit, what, quiet=quiet)
    else:
        raise ModelLoadError(
            f"Hub repo {repo_id} holds neither a deeplabcli checkpoint nor a transformers model. "
            f"{MODELS_HINT}."
        )
    return {"config": config_path, "weights": weights}


def load_hub_model(repo_id: str, revision: str = "main", *, what: str | None = None) -> DeepLabV3:
    """A model from Hub repo ``repo_id`` at ``revision``, in our format or transformers'."""
    what = what or f"{repo_id}@{revision}"
    files = fetch_hub_files(repo_id, revision, what=what)
    document = read_json(files["config"])
    commit = files["config"].parent.name
    source = f"hf://{repo_id}@{revision}"
    if is_checkpoint_config(document):
        model = build_ours(document, read_safetensors(files["weights"]), what)
        model.provenance = {**model.provenance, "source": source, "revision": commit}
        return model
    provenance = make_provenance(source, converted_from="transformers", revision=commit)
    return from_transformers_config(document, read_weights(files["weights"]), provenance, what)


def _hub_file(repo_id: str, filename: str, revision: str, what: str, **kw: Any) -> Path:
    return hub.hub_download(repo_id, filename, revision=revision, what=what, **kw)  # type: ignore[return-value]


# ------------------------------------------------------------------------------ model cards
def fetch_card_files(card: ModelCard, *, quiet: bool = False) -> dict[str, Path]:
    """Download (or find in the cache) and verify a card's files: ``{"weights": ...}`` plus
    ``{"config": ...}`` for Hub cards in our or transformers' format."""
    what = f"model {card.name!r}"
    if card.file:
        return {"weights": embedded_file(card)}
    if card.url:
        weights = hub.url_download(
            card.url, what=what, sha256=card.sha256, size=card.size, quiet=quiet
        )
        return {"weights": weights}
    assert card.repo and card.filename
    files: dict[str, Path] = {}
    if card.format in ("ours", "transformers"):
        files["config"] = _hub_file(card.repo, CONFIG_NAME, card.revision, what, quiet=quiet)
        if card.format == "transformers":
            check_transformers_config(read_json(files["config"]), f"Hub repo {card.repo}")
    files["weights"] = _hub_file(
        card.repo, card.filename, card.revision, what, sha256=card.sha256, size=card.size,
        quiet=quiet,
    )  # fmt: skip
    return files


def embedded_file(card: ModelCard) -> Path:
    """The weights file shipped beside ``card``, checked against the card's sha256 (and never
    deleted: it belongs to the installation, not to the download cache)."""
    path = card.beside(str(card.file))
    if not path.is_file():
        raise ModelLoadError(
            f"the embedded model file {path} of {card.name!r} is missing from this installation. "
            "Reinstall deeplabcli (from a checkout: pip install .)."
        )
    digest = sha256_file(path)
    if digest != card.sha256:
        raise IntegrityError(
            f"the embedded model file {path} has sha256 {digest[:12]}… instead of the card's "
            f"{str(card.sha256)[:12]}…, so it is damaged. Reinstall deeplabcli "
            "(from a checkout: pip install .)."
        )
    return path


def card_is_cached(card: ModelCard) -> bool:
    """Whether a card's weights are on this machine (cached or embedded; no network, no
    hashing)."""
    if card.file:
        return card.beside(card.file).is_file()
    if card.url:
        return hub.url_cache_path(card.url).is_file()
    assert card.repo and card.filename
    return hub.hub_file_cached(card.repo, card.filename, card.revision)


def load_card_model(card: ModelCard, *, quiet: bool = False) -> DeepLabV3:
    """The segmentation model a card names, with the card's classes and preprocessing."""
    if not card.is_model:
        raise ModelLoadError(
            f"{card.name!r} is an ImageNet backbone for training, not a segmentation model. "
            f"Use it as training initialisation; {MODELS_HINT.lower()} to pick a model."
        )
    files = fetch_card_files(card, quiet=quiet)
    weights = files["weights"]
    provenance = make_provenance(
        card.name,
        converted_from=None if card.format == "ours" else card.format,
        origin=card.source,
        sha256=sha256_file(weights),
    )
    if card.file:  # our format in one file (config in its metadata), weights maybe packed
        model = load_safetensors_file(weights)
        provenance = {**provenance, **model.provenance, "license": card.license}
    elif card.format == "ours":
        model = build_ours(read_json(files["config"]), read_safetensors(weights), card.name)
    elif card.format == "transformers":
        document = read_json(files["config"])
        model = from_transformers_config(document, read_weights(weights), provenance, card.name)
    elif card.format == "torchvision":
        from .convert import from_torchvision

        model = from_torchvision(safe_torch_load(weights), card.architecture)
    else:  # tflite
        model = load_tflite(weights)
    model.provenance = provenance
    return _apply_card(model, card)


def _apply_card(model: DeepLabV3, card: ModelCard) -> DeepLabV3:
    changes: dict[str, Any] = {}
    if card.classes:
        if len(card.classes) != model.config.num_classes:
            raise ModelLoadError(
                f"model card {card.name!r} lists {len(card.classes)} classes but its weights have "
                f"{model.config.num_classes}. Fix the card's classes."
            )
        changes["class_names"] = card.classes
    if card.preprocessing is not None:
        changes["preprocessing"] = card.preprocessing
    if changes:
        model.config = model.config.replace(**changes)
    return model


def download_model(name: str, *, quiet: bool = False) -> dict[str, Path]:
    """Fetch and verify the files of a card or a Hub repo ``owner/name[@revision]`` into the
    cache (``deeplab download NAME``), so that they load later without network."""
    card = find_card(name)
    repo = None if card else parse_hub_ref(name)
    if repo is not None:
        return fetch_hub_files(*repo, quiet=quiet)
    return fetch_card_files(card or get_card(name), quiet=quiet)


# ------------------------------------------------------------------------------ training
def load_backbone_weights(ref: Ref) -> dict[str, torch.Tensor]:
    """Backbone initialisation for training: a ResNet state dict in torchvision's names (the
    dilated ResNet loads it as is), without the ImageNet classifier.

    ``ref`` is a ``torchvision-backbone`` card (``resnet50-imagenet``), a local ImageNet ResNet
    ``.pth``/``.safetensors`` file, or any segmentation model reference (its backbone is taken).
    """
    text = os.fspath(ref)
    path = Path(text).expanduser()
    card = None if path.exists() else find_card(text)
    if card is not None and card.format == "torchvision-backbone":
        state_dict = safe_torch_load(fetch_card_files(card)["weights"])
    elif path.is_file() and path.suffix.lower() in (*PICKLE_SUFFIXES, ".safetensors"):
        state_dict = read_weights(path)
        if layout(state_dict) != "resnet":
            return load_model(path).backbone.state_dict()
    else:
        return load_model(text).backbone.state_dict()
    if layout(state_dict) != "resnet":
        raise ModelLoadError(f"{text} is not an ImageNet ResNet backbone. {MODELS_HINT}.")
    resnet_name(state_dict)  # validates the depth
    return backbone_state_dict(state_dict)


# ------------------------------------------------------------------------------ convert / info
def convert_model(src: Ref, output: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Load any reference and write it as a deeplabcli checkpoint directory (atomically);
    an existing ``output`` is replaced only with ``overwrite=True``."""
    from .checkpoint import save_checkpoint

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputWriteError(
            f"{output} already exists. Pass --overwrite to replace it, or choose another -o."
        )
    if not output.is_dir():
        check_writable(output, "Choose another -o")  # before the model is loaded
    model = load_model(src)
    return save_checkpoint(model, output, provenance=model.provenance, overwrite=overwrite)


def describe_model(model: DeepLabV3) -> dict[str, Any]:
    """What ``deeplab info`` prints: architecture, output stride, head, classes, preprocessing,
    parameter count and provenance, as JSON-ready values."""
    return {
        **describe_config(model.config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "provenance": dict(model.provenance),
    }


def describe_config(config: ModelConfig) -> dict[str, Any]:
    """The architecture part of :func:`describe_model` (also what an exported file says)."""
    return {
        "architecture": config.arch,
        "backbone": config.backbone,
        "output_stride": config.output_stride,
        "head": config.head,
        "aspp_rates": list(config.scaled_aspp_rates()) if config.aspp_rates else [],
        "image_pooling": config.image_pooling,
        "aux_head": config.aux_head,
        "num_classes": config.num_classes,
        "classes": list(config.class_names),
        "preprocessing": config.to_dict()["preprocessing"],
    }
