"""Shared fixtures: isolated user state, the real data beside the project, tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Real test material (see ../shared/data/README.md); absent in a user's fresh clone.
SHARED_DATA = ROOT.parent / "shared" / "data"
VOC_ROOT = SHARED_DATA / "VOCdevkit"
MODELS_DIR = SHARED_DATA / "models"
PHOTOS_DIR = SHARED_DATA / "photos"


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point every cache and config at a temporary directory and forbid real downloads."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    # Unroutable endpoint: a test that forgets its local server fails instead of going online.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DEEPLAB_DATA_ROOT", raising=False)
    monkeypatch.delenv("DEEPLAB_EXPORT_CACHE", raising=False)  # exports go under XDG_CACHE_HOME
    yield home


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def voc_root() -> Path:
    """``../shared/data/VOCdevkit`` (120 val + 400 trainaug real VOC images)."""
    return _require(VOC_ROOT / "VOC2012")


@pytest.fixture
def tflite_float_path() -> Path:
    """Google's float32 DeepLabv3 MobileNetV2 (depth 0.5, 257×257) TFLite model."""
    return _require(MODELS_DIR / "deeplabv3_257_mv_gpu.tflite")


@pytest.fixture
def tflite_quant_path() -> Path:
    """Google's uint8 DeepLabv3 MobileNetV2 (depth 1.0, 513×513, ArgMax output) TFLite model."""
    return _require(MODELS_DIR / "deeplabv3_mnv2_pascal_quant.tflite")


@pytest.fixture
def photos_dir() -> Path:
    return _require(PHOTOS_DIR)
