"""``deeplab models`` / ``download`` / ``convert`` / ``info``: pretrained models and references.

Every ``--model``-style argument here is a model reference (see :mod:`deeplabcli.weights.resolve`): a
card name from ``deeplab models``, a checkpoint directory, a weights file (.safetensors, .pth,
.tflite) or a Hub repo ``owner/name[@revision]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.command("models", short_help="List the named pretrained models.")
@click.option("--json", "as_json", is_flag=True, help="Print the cards as JSON on stdout.")
def models_command(as_json: bool) -> None:
    """List the named pretrained models (model cards) and whether they are cached."""
    from ..weights.cards import list_cards
    from ..weights.resolve import card_is_cached

    cards = list_cards()
    rows = [_card_summary(card, card_is_cached(card)) for card in cards]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from ..progress import print_table

    table = [
        (
            r["name"] + (" *" if r["default"] else ""),
            r["backbone"],
            r["num_classes"] or "-",
            "package" if r["embedded"] else _short_source(r["source"]),
            r["metric_short"] or "-",
            "embedded" if r["embedded"] else "yes" if r["cached"] else "no",
        )
        for r in rows
    ]
    columns = ("name", "backbone", "classes", "source", "reported", "cached")
    # names are what people copy: never cut; narrow terminals lose source, classes, backbone
    print_table("Pretrained models (* = default)", columns, table, whole=(0,), optional=(3, 2, 1))


def _card_summary(card: Any, cached: bool) -> dict[str, Any]:
    metric = card.metric
    return {
        "name": card.name,
        "default": card.default,
        "embedded": card.embedded,
        "description": card.description,
        "format": card.format,
        "architecture": card.architecture,
        "backbone": card.backbone,
        "num_classes": card.num_classes,
        "source": card.source,
        "sha256": card.sha256,
        "license": card.license,
        "metric": str(metric) if metric else None,
        "metric_short": f"{metric.value:g} {metric.name}" if metric else None,
        "metric_source": metric.source if metric else None,
        "cached": cached,
    }


def _short_source(source: str) -> str:
    """``hf:owner/name`` for Hub cards, the host for URL cards."""
    if "://" in source:
        return source.split("://", 1)[1].split("/", 1)[0]
    return "hf:" + source.split("@", 1)[0]


@click.command("download", short_help="Download and verify a model into the cache.")
@click.argument("name")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def download_command(name: str, quiet: bool) -> None:
    """Download and verify the files of model NAME into the cache (HF_HOME).

    NAME: a model name from `deeplab models` or a Hub repo owner/name[@revision]. Run it on a
    connected machine, then copy the cache to use the model offline (HF_HUB_OFFLINE=1).
    """
    from ..progress import message
    from ..weights.resolve import download_model

    files = download_model(name, quiet=quiet)
    message(f"{name}: verified and cached", quiet=quiet)
    for path in files.values():
        click.echo(str(path))


@click.command("convert", short_help="Convert a model to a deeplabcli checkpoint.")
@click.argument("src")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The checkpoint directory to write (config.json + model.safetensors).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def convert_command(src: str, output: Path, overwrite: bool) -> None:
    """Convert any model reference SRC into a deeplabcli checkpoint directory.

    SRC: a torchvision .pth, a transformers MobileNetV2 directory or Hub repo, a .tflite file,
    a model name from `deeplab models`, or another checkpoint. The directory is written under a
    temporary name and renamed, so an interrupted conversion leaves nothing behind.
    """
    from ..progress import message
    from ..weights.resolve import convert_model

    written = convert_model(src, output, overwrite=overwrite)
    message(f"wrote checkpoint {written}")
    click.echo(str(written))


@click.command("info", short_help="Describe a model: architecture, classes, licence.")
@click.argument("ref", metavar="REF")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON on stdout.")
def info_command(ref: str, as_json: bool) -> None:
    """Describe model REF: architecture, output stride, classes, preprocessing, parameters,
    licence and provenance.

    REF: a model name from `deeplab models`, a checkpoint directory, a .safetensors, .pth or
    .tflite file, an exported .onnx or .xml file, or a Hugging Face Hub repo
    owner/name[@revision]. A model name is described from its card (and its weights when they
    are embedded or cached): nothing is downloaded. Also says which backend `--backend auto`
    runs the model on here, and which runtimes are installed.
    """
    from ..weights.describe import describe_reference

    info = describe_reference(ref)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in _info_lines(info):
        click.echo(f"{key + ':':<24}{value}".rstrip())


def _info_lines(info: dict[str, Any]) -> list[tuple[str, Any]]:
    card = info.get("card")
    lines: list[tuple[str, Any]] = []
    if card:
        lines += [("name", card["name"] + (" (default)" if card["default"] else "")),
                  ("description", card["description"])]  # fmt: skip
    lines += [("architecture", info["architecture"]), ("backbone", info["backbone"])]
    if "head" in info:
        head = info["head"]
        if info["aspp_rates"]:
            head += f", ASPP rates {', '.join(map(str, info['aspp_rates']))}"
        if info["image_pooling"]:
            head += ", image pooling"
        lines += [("output stride", info["output_stride"]), ("head", head),
                  ("aux head", info["aux_head"])]  # fmt: skip
    if info["classes"]:
        lines.append(("classes", f"{info['num_classes']}: {', '.join(info['classes'])}"))
    pre = info["preprocessing"]
    if pre:
        resize = f"fit {pre['size']}" if pre["resize"] == "fit" else "none (whole image)"
        lines += [("mean / std", f"{list(pre['mean'])} / {list(pre['std'])}"), ("resize", resize)]
    if info["parameters"] is not None:
        lines.append(("parameters", f"{info['parameters']:,}"))
    if card:
        where = "embedded in deeplabcli" if card["embedded"] else (
            "cached" if card["on_this_machine"] else
            f"not downloaded (`deeplab download {card['name']}` fetches it)"
        )  # fmt: skip
        lines += [("weights", where), ("source", card["source"]),
                  ("license", card["license"])]  # fmt: skip
        lines += [("  file", path) for path in card["license_files"]]
        if card["metric"]:
            lines.append(("reported", f"{card['metric']}, {card['metric_source']}"))
        if card["upstream"]:
            lines += [("made from", ""), *((f"  {k}", v) for k, v in card["upstream"].items())]
    exported = info.get("exported")
    if exported:
        static = exported["static_size"]
        lines += [("exported", f"{exported['format']}, {exported['path']}"),
                  ("int8", "yes" if exported["int8"] else "no (float32)"),
                  ("input size", f"{static[1]}×{static[0]} only" if static else "any (dynamic)")]  # fmt: skip
    provenance: list[tuple[str, Any]] = []
    for key, value in info["provenance"].items():
        if isinstance(value, dict):  # a record of its own, e.g. how the file was exported
            provenance += [(f"  {key}", ""), *((f"    {k}", v) for k, v in value.items())]
        elif value is not None:
            provenance.append((f"  {key}", value))
    lines += [("provenance", ""), *provenance] if provenance else []
    backends = info["backends"]
    cpu = backends["cpu"]
    lines += [("backend (auto)", f"{backends['auto']} ({backends['precision']}) on this machine"),
              ("backends installed", ", ".join(backends["installed"])),
              ("cpu", f"{cpu['model']}, {cpu['cores']} cores: {' '.join(cpu['features'])}")]  # fmt: skip
    return lines
