"""Every Python snippet of the README runs as written, offline, in a folder holding a photo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_offline(index: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(index)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(
        tmp_path / "photo.jpg"
    )
    (tmp_path / "snippet.py").write_text(SNIPPETS[index], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPLAB_")}
    assert env["HF_ENDPOINT"] == "http://127.0.0.1:9"  # conftest: the Hub is unreachable
    env["TORCH_HOME"] = str(tmp_path / "torch")  # torchvision downloads would land here
    done = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"README snippet {index}:\n{SNIPPETS[index]}\n{done.stderr}"
    assert not (tmp_path / "torch").exists(), "the snippet downloaded weights"
