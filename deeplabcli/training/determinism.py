"""``--deterministic``: identical runs give identical weights, on CUDA as well as on the CPU.

Without it a CPU run is already reproducible bit for bit (and resumes bit-exactly): the CPU
kernels used in training are deterministic, and the data order, every augmentation and dropout
derive from the seed. On CUDA, cuDNN's autotuner (``cudnn.benchmark``) picks kernels by timing
and some kernels accumulate with atomics, so two runs drift apart by float rounding.

:func:`deterministic_mode` turns that off for one run: ``torch.use_deterministic_algorithms``
(which also makes cuDNN deterministic), no cuDNN benchmark, and ``CUBLAS_WORKSPACE_CONFIG`` =
``:4096:8`` (cuBLAS's reproducible workspace; it is read when cuBLAS starts, so it is set
before the run touches CUDA). The previous settings come back when the run ends. The model's
own layers avoid the kernels PyTorch has no deterministic backward for (bilinear upsampling,
adaptive average pooling; :func:`deeplabcli.models.heads.deterministic_backward`); any other
such operation stops the run with one :class:`~deeplabcli.errors.NondeterministicOpError`
naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import NondeterministicOpError

CUBLAS_WORKSPACE = ":4096:8"
#: The values of CUBLAS_WORKSPACE_CONFIG that make cuBLAS deterministic.
REPRODUCIBLE_WORKSPACES = (":4096:8", ":16:8")
_NO_DETERMINISTIC_KERNEL = re.compile(r"^(\S+) does not have a deterministic implementation")


def nondeterministic_op(error: BaseException) -> str | None:
    """The operation named by PyTorch's "X does not have a deterministic implementation" error,
    or None for any other error."""
    if not isinstance(error, RuntimeError):
        return None
    match = _NO_DETERMINISTIC_KERNEL.match(str(error).strip())
    return match.group(1) if match else None


@contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Run the block with deterministic algorithms when ``enabled`` (else change nothing);
    restore PyTorch's previous settings afterwards. An operation without a deterministic
    implementation becomes :class:`NondeterministicOpError`."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
        cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    if previous[-1] not in REPRODUCIBLE_WORKSPACES:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    except RuntimeError as error:
        op = nondeterministic_op(error)
        if op is None:
            raise
        raise NondeterministicOpError(
            f"--deterministic: PyTorch has no deterministic implementation of {op} (used by "
            "this model). Train without --deterministic (CPU runs are reproducible without it)."
        ) from None
    finally:
        enabled_before, warn_only, cudnn.benchmark, cudnn.deterministic, workspace = previous
        torch.use_deterministic_algorithms(enabled_before, warn_only=warn_only)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace
