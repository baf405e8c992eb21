"""Models the inference tests share: a tiny ResNet DeepLab and a resize-to-fit MobileNetV2."""

from __future__ import annotations

import pytest
import torch

from deeplabcli import build_model
from deeplabcli.config import Preprocessing


@pytest.fixture(scope="module")
def model():
    """Tiny ResNet DeepLabv3 (whole images at their own size), fixed weights."""
    torch.manual_seed(0)
    return build_model("deeplabv3_tiny").eval()


@pytest.fixture(scope="module")
def fit_model():
    """Tiny MobileNetV2 DeepLabv3 that resizes to fit a 48 px square, as Google's models do."""
    torch.manual_seed(0)
    prep = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="fit", size=48)
    return build_model("deeplabv3_mobilenetv2_tiny", preprocessing=prep).eval()
