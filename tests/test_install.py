"""A fresh install from the checkout works offline: build the wheel, install it into a new
virtualenv, and run the README's first predict on a real photo with the Hub unreachable.

The virtualenv sees the test environment's packages (torch is not installed twice) through a
``.pth`` file added after the wheel is installed, so pip never sees the checkout's own editable
install. Everything runs without an index: the wheel is built with the hatchling of the test
environment (``--no-build-isolation``, part of the ``test`` extra) and installed ``--no-index``.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def sh(*args: object, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # fmt: skip
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def test_readme_starts_with_an_install_from_the_checkout_then_predict() -> None:
    first = re.search(r"## Install\n(.*?)\n## ", README.read_text(), re.S).group(1)
    commands = re.findall(r"```bash\n(.*?)```", first, re.S)[0].splitlines()
    assert [c.split("#")[0].strip() for c in commands[-2:]] == [
        "pipx install .",
        "deeplab predict photo.jpg -o mask.png",
    ]


def test_wheel_installs_and_predicts_offline(tmp_path: Path, photos_dir: Path) -> None:
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling")
    dist = tmp_path / "dist"
    sh(sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
       "-q", "-w", dist, ROOT)  # fmt: skip
    (wheel,) = dist.glob("deeplabcli-*.whl")
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps",
       "-q", wheel)  # fmt: skip
    purelib = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                   .stdout.strip())  # fmt: skip
    (purelib / "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPLAB_", "PYTHON"))}
    env.pop("HF_HUB_OFFLINE", None)
    assert env["HF_ENDPOINT"] == "http://127.0.0.1:9"  # conftest: a closed port, no Hub
    work = tmp_path / "user"
    work.mkdir()
    where = sh(python, "-c", "import deeplabcli.weights.cards as c; print(c.__file__); "
               "print(c.cards_dir())", cwd=work, env=env).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(purelib)  # the wheel, not the checkout
    assert Path(where[1]) == purelib / "deeplabcli" / "weights" / "card_files"

    photo = photos_dir / "dog.jpg"
    start = time.perf_counter()
    done = subprocess.run([venv / "bin" / "deeplab", "predict", photo, "-o", "mask.png"],
                          capture_output=True, text=True, cwd=work, env=env, timeout=60)  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"installed `deeplab predict dog.jpg -o mask.png`: {seconds:.1f} s")
    assert done.returncode == 0, done.stderr
    assert "Retrying" not in done.stderr and "Error" not in done.stderr
    assert seconds <= 10.0
    with Image.open(work / "mask.png") as mask:
        assert mask.mode == "P"
        assert mask.size == Image.open(photo).size
        assert 12 in np.unique(np.asarray(mask))  # VOC "dog"

    info = sh(venv / "bin" / "deeplab", "info", "deeplabv3-mobilenetv2-voc-8bit", cwd=work,
              env=env).stdout  # fmt: skip
    assert "license:                Apache-2.0" in info
    assert f"  file:                 {purelib / 'deeplabcli' / 'weights' / 'card_files'}" in info


def test_every_extra_hint_says_how_to_install_it_from_a_checkout() -> None:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

    from deeplabcli.errors import EXTRAS, extra_hint

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras) - {"test", "dev"} == set(EXTRAS)
    for extra, package in EXTRAS.items():
        for name in package.split():  # the packages pipx injects are the extra's requirements
            assert any(req.split(">")[0] == name for req in extras[extra]), (extra, name)
        assert f'pip install ".[{extra}]"' in extra_hint(extra)
        assert f"pipx inject deeplabcli {package}" in extra_hint(extra)
    assert "ruff" in " ".join(extras["test"])  # the README lints after `pip install -e ".[test]"`
    hand_written = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "deeplabcli").rglob("*.py"))
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "pip install" in line.split("#")[0] and "deeplabcli[" in line
    ]
    assert not hand_written, f"use errors.extra_hint: {hand_written}"
