"""Run a test module's tiny networks on one intra-op thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on one intra-op thread: as fast, and no spinning on a busy machine.
    Import it into a test module (``from support.threads import one_thread``) to apply it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
