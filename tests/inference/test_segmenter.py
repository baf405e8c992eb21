"""The shared inference core: preprocessing, output stride, multi-scale + flip, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from deeplabcli import build_model
from deeplabcli.config import Preprocessing
from deeplabcli.errors import ConfigError
from deeplabcli.inference import scores
from deeplabcli.inference.scores import resize_rows
from deeplabcli.inference.segmenter import Segmenter, as_pixels, resolve_device


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def normalise(image: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """Reference preprocessing: (x/255 - mean) / std, (1, 3, H, W)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return (x - mean) / std


def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)["out"]


def test_single_run_is_the_argmax_of_the_model_on_the_normalised_image(model) -> None:
    image = photo(37, 53)
    expected = logits_of(model, normalise(image, model.config.preprocessing))[0].argmax(0)
    for optimize in (False, True):
        mask = Segmenter(model, device="cpu", optimize=optimize).predict(image)
        assert mask.shape == (37, 53) and mask.dtype == np.uint8
        assert (mask == expected.numpy()).mean() > 0.999


def test_probabilities_sum_to_one_and_match_the_softmax(model) -> None:
    image = photo(30, 41)
    probs = Segmenter(model, device="cpu", optimize=False).probabilities(image)
    assert probs.shape == (21, 30, 41) and probs.dtype == torch.float32
    expected = logits_of(model, normalise(image, model.config.preprocessing))[0].softmax(0)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)


def test_multi_scale_and_flip_average_probabilities_at_the_original_size(model) -> None:
    image = photo(40, 56, seed=3)
    x = normalise(image, model.config.preprocessing)
    scales = (0.5, 1.0, 1.5)
    runs = []
    for scale in scales:
        size = (round(40 * scale), round(56 * scale))
        raw = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        scaled = (
            F.interpolate(raw, size=size, mode="bilinear", antialias=True) if scale != 1 else raw
        )
        xs = normalise(scaled[0].permute(1, 2, 0).numpy(), model.config.preprocessing)
        for flip in (False, True):
            logits = logits_of(model, xs.flip(-1) if flip else xs)
            logits = logits.flip(-1) if flip else logits
            logits = F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=False)
            runs.append(logits.softmax(1)[0])
    expected = torch.stack(runs).mean(0)
    segmenter = Segmenter(model, scales=scales, flip=True, device="cpu")
    assert segmenter.runs_per_image == 6
    probs = segmenter.probabilities(image)
    torch.testing.assert_close(probs, expected, atol=1e-4, rtol=0)
    assert (segmenter.predict(image) == expected.argmax(0).numpy()).mean() > 0.999
    assert x.shape[-2:] == probs.shape[-2:]


def test_output_stride_runs_on_a_copy(model) -> None:
    image = photo(45, 45)
    copy = build_model(model.config)
    copy.load_state_dict(model.state_dict())
    copy.eval().set_output_stride(8)
    expected = logits_of(copy, normalise(image, model.config.preprocessing))[0].argmax(0)
    segmenter = Segmenter(model, output_stride=8, device="cpu", optimize=False)
    assert segmenter.config.output_stride == 8
    assert model.output_stride == 16  # the caller's model is untouched
    assert (segmenter.predict(image) == expected.numpy()).mean() > 0.999
    with pytest.raises(ConfigError, match="output stride 4 is not possible"):
        Segmenter(model, output_stride=4, device="cpu")


def test_fit_resizes_the_long_side_pads_with_the_mean_and_maps_back(fit_model) -> None:
    image = photo(30, 60, seed=5)  # long side 60 → 48, content 24 × 48 on a 48 × 48 canvas
    raw = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = F.interpolate(raw, size=(24, 48), mode="bilinear", antialias=True)
    canvas = torch.full((1, 3, 48, 48), 127.5)  # the mean colour
    canvas[:, :, :24] = resized
    x = (canvas / 255 - 0.5) / 0.5
    logits = logits_of(fit_model, x)[:, :, :24, :48]
    expected = F.interpolate(logits, size=(30, 60), mode="bilinear", align_corners=False)
    probs = Segmenter(fit_model, device="cpu").probabilities(image)
    assert probs.shape == (21, 30, 60)
    torch.testing.assert_close(probs, expected.softmax(1)[0], atol=1e-4, rtol=0)


def test_fit_model_batches_images_of_different_sizes(fit_model) -> None:
    images = [photo(30, 60, 1), photo(50, 20, 2), photo(48, 48, 3)]
    segmenter = Segmenter(fit_model, device="cpu")
    assert {segmenter.batch_key((h, w)) for h, w, _ in (i.shape for i in images)} == {(48, 48)}
    calls = []
    original = segmenter._forward
    segmenter._forward = lambda x: calls.append(x.shape[0]) or original(x)  # type: ignore[method-assign]
    batched = segmenter.predict_batch(images)
    assert calls == [3]
    single = [Segmenter(fit_model, device="cpu").predict(i) for i in images]
    for got, want, image in zip(batched, single, images, strict=True):
        assert got.shape == image.shape[:2]
        assert (got == want).mean() > 0.999


def test_batches_of_equal_size_images_match_single_runs(model) -> None:
    images = [photo(33, 47, s) for s in range(3)] + [photo(20, 25, 9)]
    segmenter = Segmenter(model, device="cpu")
    assert segmenter.batch_key((33, 47)) == (33, 47)
    batched = segmenter.predict_batch(images)
    for got, image in zip(batched, images, strict=True):
        assert (got == segmenter.predict(image)).mean() > 0.999


def test_image_forms_give_the_same_mask(model, tmp_path) -> None:
    image = photo(21, 34)
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    segmenter = Segmenter(model, device="cpu")
    expected = segmenter.predict(image)
    for form in (Image.fromarray(image), str(path), path, image.astype(np.float32) / 255):
        assert np.array_equal(segmenter.predict(form), expected)


def test_as_pixels_accepts_grayscale_and_rgba_arrays() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    pixels = as_pixels(gray)
    assert pixels.shape == (3, 3, 4) and pixels.dtype == torch.uint8
    assert torch.equal(pixels[0], torch.from_numpy(gray)) and torch.equal(pixels[2], pixels[0])
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    assert as_pixels(rgba)[:, 0, 0].tolist() == [200, 0, 0]
    with pytest.raises(ValueError, match="expected an array"):
        as_pixels(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(TypeError, match="expected a PIL image"):
        as_pixels(42)  # type: ignore[arg-type]


def test_training_mode_of_a_shared_model_is_restored() -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").train()
    segmenter = Segmenter(model, device="cpu", optimize=False)
    assert segmenter.network is model
    first = segmenter.predict(photo(20, 20))
    assert model.training
    assert np.array_equal(first, segmenter.predict(photo(20, 20)))  # eval mode: BN stats fixed


def test_band_wise_resizing_equals_one_resize(model, monkeypatch) -> None:
    image = photo(50, 70, seed=4)
    for scales, flip in (((1.0,), False), ((0.75, 1.25), True)):
        whole = Segmenter(model, scales=scales, flip=flip, device="cpu")
        expected_mask = whole.predict(image)
        expected_probs = whole.probabilities(image)
        monkeypatch.setattr(scores, "BAND_ELEMENTS", 21 * 70 * 7)  # 7 rows per band
        assert np.array_equal(whole.predict(image), expected_mask)
        torch.testing.assert_close(whole.probabilities(image), expected_probs, atol=1e-5, rtol=0)
        monkeypatch.undo()


@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_rows_matches_interpolate(align_corners: bool) -> None:
    x = torch.randn(5, 13, 17)
    full = F.interpolate(x[None], size=(40, 29), mode="bilinear", align_corners=align_corners)[0]
    assert torch.equal(resize_rows(x, (40, 29), slice(0, 40), align_corners), full)
    band = resize_rows(x, (40, 29), slice(11, 23), align_corners)
    torch.testing.assert_close(band, full[:, 11:23], atol=1e-5, rtol=0)
    assert torch.equal(resize_rows(x, (13, 17), slice(2, 5), align_corners), x[:, 2:5])


def test_devices_and_options_are_checked(model) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as error:
            resolve_device("cuda")
        assert (
            str(error.value) == "CUDA is not available on this machine. Use --device cpu or auto."
        )
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="scales must be positive"):
        Segmenter(model, scales=(1.0, 0.0), device="cpu")
    assert Segmenter(model, device="cpu").amp is False  # a small model: float32 on a CPU
    assert Segmenter(model, device="cpu", amp=True).autocast == torch.bfloat16  # asked for


def test_first_argmax_equals_argmax_with_ties_first() -> None:
    from deeplabcli.inference.scores import first_argmax

    torch.manual_seed(0)
    for classes in (1, 3, 21, 300):
        scores = torch.randn(classes, 17, 23)
        scores[:, 0, 0] = 2.0  # a tie of every class: the first wins
        scores[-1, 1, 1] = 9.0  # the last class
        got = first_argmax(scores)
        assert got.dtype == (torch.uint8 if classes < 256 else torch.int64)
        assert torch.equal(got.long(), scores.argmax(0))
        channels_last = scores.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        assert torch.equal(first_argmax(channels_last).long(), scores.argmax(0))


# ---------------------------------------------------------------------- TTA maths, peaked logits
class KnownLogits(torch.nn.Module):
    """Peaked logits (N, 3, h, w) known in closed form from the input's size alone: class 0
    rises from the left edge to the right (so a flipped run differs, and a flip not undone
    shows), class 1 from top to bottom, class 2 with the input's height (so scales differ)."""

    GAIN = 12.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.logits(x.shape[-2], x.shape[-1]).expand(x.shape[0], -1, -1, -1)}

    @classmethod
    def logits(cls, h: int, w: int) -> torch.Tensor:
        cols = torch.linspace(-1, 1, w).view(1, w).expand(h, w)
        rows = torch.linspace(-1, 1, h).view(h, 1).expand(h, w)
        size = torch.full((h, w), h / 40 - 1.0)
        return cls.GAIN * torch.stack([cols, rows, 2 * size])[None]


def tta_runs(scales: tuple[float, ...], flip: bool, *, undo_flip: bool = True) -> torch.Tensor:
    """Every run's logits at the 40×56 image size (R, 3, 40, 56), computed by hand."""
    runs = []
    for scale in scales:
        logits = KnownLogits.logits(round(40 * scale), round(56 * scale))
        for flipped in (False, True) if flip else (False,):
            # the network sees the flipped input but its logits ignore the content: undoing
            # the flip mirrors them
            run = logits.flip(-1) if flipped and undo_flip else logits
            runs.append(F.interpolate(run, size=(40, 56), mode="bilinear", align_corners=False))
    return torch.cat(runs)


def known_segmenter(model, **options) -> Segmenter:
    segmenter = Segmenter(model, device="cpu", optimize=False, **options)
    segmenter.network = KnownLogits()
    return segmenter


def test_multi_scale_and_flip_average_probabilities_of_peaked_known_logits(model) -> None:
    """Scales × flips average the runs' softmax probabilities (paper Sec. 4.3), with each
    flipped run flipped back; with peaked logits the alternatives are far off."""
    image = photo(40, 56, seed=5)
    scales = (0.5, 1.0, 1.5)
    runs = tta_runs(scales, flip=True)
    expected = runs.softmax(1).mean(0)
    probs = known_segmenter(model, scales=scales, flip=True).probabilities(image)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    # what the test tells apart: averaged logits, and flipped runs left mirrored
    averaged_logits = runs.mean(0).softmax(0)
    mirrored = tta_runs(scales, flip=True, undo_flip=False).softmax(1).mean(0)
    assert (averaged_logits - expected).abs().max() > 0.3
    assert (mirrored - expected).abs().max() > 0.3
    mask = known_segmenter(model, scales=scales, flip=True).predict(image)
    assert (mask == expected.argmax(0).numpy()).mean() > 0.999


def test_flip_alone_and_one_run_of_peaked_known_logits(model) -> None:
    image = photo(40, 56, seed=6)
    flipped = known_segmenter(model, flip=True).probabilities(image)
    runs = tta_runs((1.0,), flip=True)
    torch.testing.assert_close(flipped, runs.softmax(1).mean(0), atol=1e-5, rtol=0)
    # left and right halves see the mirrored class-0 logits: averaged, class 0 is never sure
    assert float(flipped[0].max()) < 0.55
    single = known_segmenter(model).probabilities(image)
    torch.testing.assert_close(single, runs[0].softmax(0), atol=1e-6, rtol=0)
    assert float(single[0, :20, -1].min()) > 0.99  # upper right edge: class 0, peaked


def test_scales_are_bounded_by_the_pixels_they_produce(model, fit_model) -> None:
    from deeplabcli.errors import ScaleLimitError
    from deeplabcli.inference.segmenter import MAX_SCALED_PIXELS

    assert MAX_SCALED_PIXELS == 4096 * 4096
    big = Segmenter(model, device="cpu", optimize=False, scales=(0.5, 1.0))
    big.check_size((6000, 8000))  # scales up to 1 never refuse a photo, however large
    huge = Segmenter(model, device="cpu", optimize=False, scales=(1.0, 100.0))
    with pytest.raises(ScaleLimitError) as caught:
        huge.predict(photo(48, 64))
    assert str(caught.value) == (
        "scale 100 makes a 6400×4800 network input (30,720,000 pixels) for the 64×48 image, "
        "above the limit of 16,777,216 pixels (4096×4096). Use --scales of at most 73.89 for it."
    )
    Segmenter(model, device="cpu", optimize=False, scales=(73.89,)).check_size((48, 64))
    with pytest.raises(ScaleLimitError) as caught:  # a "fit" model: the input is 48 × scale
        Segmenter(fit_model, device="cpu", scales=(86.0,)).check_size((4, 4), "'x'")
    assert str(caught.value) == (
        "scale 86 makes a 4128×4128 network input (17,040,384 pixels) for the 4×4 image 'x', "
        "above the limit of 16,777,216 pixels (4096×4096). Use --scales of at most 85.33 with "
        "this model."
    )
