"""Paired transforms: image and mask stay aligned, padding, determinism, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeplabcli.config import INCEPTION_MEAN, INCEPTION_STD, Preprocessing
from deeplabcli.data.transforms import EvalTransform, TrainTransform, normalise
from deeplabcli.errors import ConfigError

PRE = Preprocessing()  # ImageNet mean/std


def ramp_sample(height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixels encode their own coordinates (R = 4·x, G = 4·y, B = 7) and a mask
    derived from them: class = (y // 6 * 5 + x // 6) % 20, a checkerboard of 6-pixel cells."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([4 * x, 4 * y, np.full_like(x, 7)], axis=-1).astype(np.uint8)
    mask = ((y // 6 * 5 + x // 6) % 20).astype(np.uint8)
    return image, mask


def denormalise(image: torch.Tensor, pre: Preprocessing = PRE) -> torch.Tensor:
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (image * std + mean) * 255


@pytest.mark.parametrize("seed", range(12))
def test_training_transform_keeps_image_and_mask_aligned(seed: int) -> None:
    image, mask = ramp_sample()
    transform = TrainTransform(PRE, crop_size=72)
    out_image, out_mask = transform(image, mask, torch.Generator().manual_seed(seed))
    assert out_image.shape == (3, 72, 72) and out_image.dtype == torch.float32
    assert out_mask.shape == (72, 72) and out_mask.dtype == torch.int64
    pixels = denormalise(out_image)
    x_hat, y_hat = pixels[0] / 4, pixels[1] / 4  # source coordinates each output pixel shows
    inside = out_mask != 255
    # away from cell borders (x = 5.5, 11.5, ...) the source cell is unambiguous
    clear = inside & ((x_hat + 0.5) % 6 - 3).abs().lt(2.6) & ((y_hat + 0.5) % 6 - 3).abs().lt(2.6)
    assert clear.sum() > 300
    expected = ((y_hat.round() // 6) * 5 + x_hat.round() // 6) % 20
    assert torch.equal(expected[clear].long(), out_mask[clear])
    assert torch.allclose(pixels[2][inside], torch.tensor(7.0), atol=1e-3)


def test_padding_is_mean_colour_and_ignore_label() -> None:
    image, mask = ramp_sample(30, 40)
    transform = TrainTransform(PRE, crop_size=100)  # even at scale 2 the image is smaller
    for seed in range(6):
        out_image, out_mask = transform(image, mask, torch.Generator().manual_seed(seed))
        pad = out_mask == 255
        assert 0 < pad.sum() < pad.numel()
        assert torch.all(out_image[:, pad] == 0)  # the mean colour, normalised
        mean = denormalise(out_image)[:, pad]
        assert torch.allclose(mean, torch.tensor(PRE.mean).view(3, 1) * 255, atol=1e-4)
        assert not torch.any(out_image[:, ~pad].abs().sum(0) == 0)
        rows, cols = (~pad).nonzero().unbind(1)
        assert rows.max() - rows.min() + 1 == (~pad).any(1).sum()  # one rectangle
        assert cols.max() - cols.min() + 1 == (~pad).any(0).sum()


def test_identity_settings_reproduce_the_input() -> None:
    image, mask = ramp_sample(30, 40)
    transform = TrainTransform(PRE, crop_size=40, scale_range=(1.0, 1.0), flip=False)
    out_image, out_mask = transform(image, mask, torch.Generator().manual_seed(0))
    expected = normalise(torch.from_numpy(image).permute(2, 0, 1), PRE)
    assert torch.equal(out_image[:, :30], expected)
    assert torch.equal(out_mask[:30], torch.from_numpy(mask).long())
    assert torch.all(out_mask[30:] == 255)


def test_flip_scale_and_crop_vary_with_the_seed() -> None:
    image, mask = ramp_sample()
    transform = TrainTransform(PRE, crop_size=32)
    flips, sizes = set(), set()
    for seed in range(40):
        out_image, out_mask = transform(image, mask, torch.Generator().manual_seed(seed))
        columns = denormalise(out_image)[0][0]
        flips.add(bool(columns[0] > columns[-1]))
        sizes.add(int((out_mask != 255).sum()))
    assert flips == {True, False}
    assert len(sizes) > 5


def test_same_generator_state_same_output() -> None:
    image, mask = ramp_sample()
    transform = TrainTransform(PRE, crop_size=50)
    a = transform(image, mask, torch.Generator().manual_seed(7))
    b = transform(image, mask, torch.Generator().manual_seed(7))
    c = transform(image, mask, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    state = torch.get_rng_state()
    transform(image, mask, torch.Generator().manual_seed(7))
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


def test_training_transform_needs_a_generator_and_valid_settings() -> None:
    image, mask = ramp_sample()
    with pytest.raises(ValueError, match=r"needs a torch\.Generator"):
        TrainTransform(PRE)(image, mask, None)
    with pytest.raises(
        ConfigError, match=r"^crop size must be positive, got 0\. Give e\.g\. 513\.$"
    ):
        TrainTransform(PRE, crop_size=0)
    with pytest.raises(
        ConfigError, match=r"^scale range must satisfy 0 < min <= max, got 2\.0\.\.1\.0\."
    ):
        TrainTransform(PRE, scale_range=(2.0, 1.0))


def test_eval_transform_is_the_whole_image_normalised() -> None:
    image, mask = ramp_sample(30, 40)
    pre = Preprocessing(mean=INCEPTION_MEAN, std=INCEPTION_STD)
    out_image, out_mask = EvalTransform(pre)(image, mask)
    assert out_image.shape == (3, 30, 40) and out_mask.dtype == torch.int64
    expected = (torch.from_numpy(image).permute(2, 0, 1).double() - 127.5) / 127.5
    assert torch.allclose(out_image.double(), expected, atol=1e-6)
    assert torch.equal(out_mask, torch.from_numpy(mask).long())
