"""The head's deterministic forms (used under ``--deterministic`` while training): the same
values and gradients as the usual kernels, which CUDA cannot differentiate deterministically."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from deeplabcli.models.heads import ASPPPooling, upsample_logits
from deeplabcli.training.determinism import deterministic_mode

SIZES = [((5, 7), (33, 40)), ((9, 9), (4, 6)), ((1, 1), (3, 2))]  # (h, w) → (H, W)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("source", "size"), SIZES)
def test_deterministic_upsampling_equals_bilinear_interpolation(
    source: tuple[int, int],
    size: tuple[int, int],
    align_corners: bool,
    dtype: torch.dtype,
    tolerance: float,
) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, *source, dtype=dtype, requires_grad=True)
    probe = torch.randn(2, 3, *size, dtype=dtype)  # any upstream gradient
    expected = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
    (expected_grad,) = torch.autograd.grad((expected * probe).sum(), logits)
    with deterministic_mode(True):
        result = upsample_logits(logits, size, align_corners)
        (grad,) = torch.autograd.grad((result * probe).sum(), logits)
        with torch.no_grad():  # nothing to differentiate: the usual kernel
            plain = upsample_logits(logits, size, align_corners)
    assert "Upsample" not in type(result.grad_fn).__name__  # the matrix-product form ran
    torch.testing.assert_close(result, expected, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance)
    assert torch.equal(plain, expected.detach())


def test_deterministic_image_pooling_equals_the_usual_branch() -> None:
    torch.manual_seed(0)
    branch = ASPPPooling(4, 6).eval()
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    expected = branch(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, *branch.parameters()])
    with deterministic_mode(True):
        result = branch(x)
        grads = torch.autograd.grad(result.square().sum(), [x, *branch.parameters()])
    assert "Upsample" in type(expected.grad_fn).__name__
    assert "Upsample" not in type(result.grad_fn).__name__
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
