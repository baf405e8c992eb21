"""Export-cache helpers of the torch-free predict tests."""

from __future__ import annotations

import os
from pathlib import Path

from deeplabcli.exporting.cache import cached_export
from deeplabcli.runtimes.cache import CACHE_ENV


def fill_cache(cache: Path, model, *, reference=None, backend: str = "onnxruntime") -> Path:
    """Export ``model`` into the export cache at ``cache`` as a first run on a non-torch
    backend does, remembering model reference ``reference`` (None: the default model), and
    return the cached file."""
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(cache)
    try:
        return Path(cached_export(model, backend, reference=reference))
    finally:
        if saved is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = saved
