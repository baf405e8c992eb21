"""An exported ``.onnx`` runs in a plain ``onnxruntime.InferenceSession`` without our package:
the README's snippet (documented input/output names, preprocessing read from the metadata,
numpy and Pillow only) gives ``deeplabcli.predict``'s masks on real photos."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplabcli import export, load_model, predict

pytest.importorskip("onnxruntime", reason="needs the onnx extra")

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "### Using an exported model without deeplabcli"
#: appended to the snippet: it must have run without importing deeplabcli
CHECK = """
leaked = sorted(name for name in sys.modules if name.split(".")[0] == "deeplabcli")
assert not leaked, leaked
print("mask", mask.shape, mask.dtype)
"""


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, "the README lost its plain ONNX Runtime section"
    return re.search(r"```python\n(.*?)```", text.split(HEADING, 1)[1], re.S).group(1)


@pytest.fixture(scope="module")
def default_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The default model (what predict uses without --model) and its ONNX export."""
    model = load_model(None)
    path = export(model, tmp_path_factory.mktemp("onnx") / "model.onnx", progress=False)
    return path, model


@pytest.mark.parametrize("name", ["dog.jpg", "person.jpg"])
def test_the_readme_snippet_gives_predicts_mask(tmp_path, photos_dir, default_export, name):
    path, model = default_export
    shutil.copy(path, tmp_path / "model.onnx")
    shutil.copy(photos_dir / name, tmp_path / "photo.jpg")
    (tmp_path / "snippet.py").write_text(readme_snippet() + CHECK, encoding="utf-8")
    done = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    expected = predict(model, photos_dir / name, backend="torch")
    assert done.stdout == f"mask {expected.shape} uint8\n"
    agreement = float((mask == expected).mean())
    print(f"{name}: plain ONNX Runtime vs deeplabcli.predict: {agreement:.5f} of the pixels")
    assert agreement >= 0.999
    assert len(np.unique(expected)) > 1  # a real scene, not an all-background map
