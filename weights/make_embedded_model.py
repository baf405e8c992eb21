"""Regenerate the embedded default model from Google's TFLite file, and check it.

    python weights/make_embedded_model.py [--tflite PATH] [--output PATH]

Reads ``deeplabv3_mnv2_pascal_quant.tflite`` (default: ``../shared/data/models/`` beside the
checkout), checks its sha256 against the card's ``[upstream]``, converts it with deeplabcli's own
importer (what ``deeplab convert`` does), stores the weights as their uint8 codes + scales + zero
points (:mod:`deeplabcli.weights.packed`; biases float32) and verifies that the file loads back to
bit-identical tensors. The file goes to ``--output`` (default: beside the card, replacing the
embedded file); its sha256 and size are then compared with the card's ``[source]``.

Then the shipped export (the card's ``[export]``): that model as an int8 ONNX graph at 513×513
with the .tflite file's own quantisation (:mod:`deeplabcli.exporting.tflite_quant`), written
beside the output as ``<card name>.int8.onnx`` and compared with the card's ``[export]``. Exit
status 0 when everything matches, 1 when the input or a result differs from the card (the
message says which values to record if the change is intended).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CARD = HERE / "deeplabv3-mobilenetv2-voc-8bit.toml"
DEFAULT_TFLITE = (
    HERE.parents[1] / "shared" / "data" / "models" / "deeplabv3_mnv2_pascal_quant.tflite"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflite", type=Path, default=DEFAULT_TFLITE, help="the .tflite file")
    parser.add_argument("--output", type=Path, help="where to write (default: beside the card)")
    args = parser.parse_args(argv)

    from deeplabcli.weights.cards import read_card
    from deeplabcli.weights.convert import from_tflite
    from deeplabcli.weights.convert.tflite import match_deeplab
    from deeplabcli.weights.convert.tflite_graph import read_graph
    from deeplabcli.weights.integrity import sha256_file
    from deeplabcli.weights.packed import save_packed

    card = read_card(CARD)
    if not args.tflite.is_file():
        print(f"error: {args.tflite} does not exist. Give the .tflite file with --tflite.")
        return 1
    digest = sha256_file(args.tflite)
    if digest != card.upstream["sha256"]:
        print(f"error: {args.tflite} has sha256 {digest}, the card says "
              f"{card.upstream['sha256']}. Use Google's {card.upstream['file']}.")  # fmt: skip
        return 1
    model = from_tflite(args.tflite)  # exactly what `deeplab convert` loads
    codes = match_deeplab(read_graph(args.tflite)).weight_codes()
    provenance = {
        "source": card.name,
        "converted_from": "tflite",
        "origin": card.upstream["publisher"],
        "upstream_file": card.upstream["file"],
        "upstream_sha256": digest,
        "converter": card.upstream["converter"],
        "license": card.license,
    }
    output = args.output or card.beside(str(card.file))
    save_packed(model, codes, output, provenance)  # checks the round trip bit by bit
    written, size = sha256_file(output, fresh=True), output.stat().st_size
    print(f"wrote {output}: {size} bytes, sha256 {written}, {len(codes)} packed weights")
    if (written, size) != (card.sha256, card.size):
        print(f"error: the card {CARD.name} records sha256 {card.sha256} and size {card.size}. "
              f"If the change is intended, record sha256 = \"{written}\" and size = {size}.")  # fmt: skip
        return 1
    export = make_export(model, provenance, args.tflite, output.with_name(
        card.export.file if card.export else f"{card.name}.int8.onnx"))  # fmt: skip
    exported, size = sha256_file(export, fresh=True), export.stat().st_size
    print(f"wrote {export}: {size} bytes, sha256 {exported}")
    if card.export is None or (exported, size) != (card.export.sha256, card.export.size):
        print(f"error: the card {CARD.name} records another [export]. If the change is "
              f"intended, record sha256 = \"{exported}\" and size = {size} under [export].")  # fmt: skip
        return 1
    print(f"matches {CARD.name}")
    return 0


#: the export record's date in the shipped export (fixed, so that the file is reproducible)
EXPORT_DATE = "2026-12-02T00:00:00+00:00"


def make_export(model, provenance: dict, tflite: Path, output: Path) -> Path:
    """``model`` (the embedded model) as an int8 ONNX graph at its 513×513 input with
    ``tflite``'s own quantisation, as ``deeplab export TFLITE --int8 --static-size 513,513``
    writes it (with this model's provenance and a fixed export date)."""
    import tempfile

    from deeplabcli.exporting.build import build_export
    from deeplabcli.exporting.plan import ExportPlan

    model.provenance = dict(provenance)
    side = model.config.preprocessing.size
    plan = ExportPlan(output, "onnx", 17, (side, side), None, tflite)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export.") as staging:
        (staged,) = build_export(model, plan, Path(staging), None, None, progress=False,
                                 extra_provenance={"created": EXPORT_DATE})  # fmt: skip
        staged.replace(output)
    return output


if __name__ == "__main__":
    sys.exit(main())
