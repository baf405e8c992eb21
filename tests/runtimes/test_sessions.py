"""Runtime sessions start from what the runtime made of a file before, kept in the export
cache (ONNX Runtime's optimised graph, OpenVINO's compiled network): the same logits, one file
per source, never an error of its own."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplabcli import build_model
from deeplabcli.errors import ModelLoadError
from deeplabcli.exporting.onnx import export_onnx
from deeplabcli.runtimes import sessions
from deeplabcli.runtimes.cache import cache_dir
from deeplabcli.runtimes.sessions import OnnxRuntimeNetwork, OpenVinoNetwork


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture
def opened(monkeypatch) -> list[tuple[str, bool]]:
    """(file name, optimised while opening) of every ONNX Runtime session made."""
    calls: list[tuple[str, bool]] = []
    real = sessions._ort_session

    def recorded(path, threads, *, optimize, save=None):
        calls.append((Path(path).name, optimize))
        return real(path, threads, optimize=optimize, save=save)

    monkeypatch.setattr(sessions, "_ort_session", recorded)
    return calls


def kept_files() -> list[Path]:
    folder = cache_dir() / "optimized"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def pixels() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 37, 50)).astype(np.float32)


def test_the_optimised_graph_is_kept_and_gives_the_same_logits(
    tmp_path: Path, exported: Path, opened
) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(exported.read_bytes())
    first = OnnxRuntimeNetwork(source)
    (kept,) = kept_files()
    assert opened == [("model.onnx", True)]  # optimised once, the result written
    second = OnnxRuntimeNetwork(source)
    assert opened[1:] == [(kept.name, False)]  # started from the kept graph, as it is
    plain = OnnxRuntimeNetwork(source, keep_optimized=False)
    assert opened[2:] == [("model.onnx", True)] and kept_files() == [kept]
    assert np.array_equal(first(pixels()), second(pixels()))
    assert np.array_equal(second(pixels()), plain(pixels()))
    assert second.metadata() == plain.metadata() and "deeplabcli.config" in plain.metadata()


def test_a_changed_source_replaces_its_kept_graph(tmp_path, exported, opened) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(exported.read_bytes())
    OnnxRuntimeNetwork(source)
    (old,) = kept_files()
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    OnnxRuntimeNetwork(source)
    (new,) = kept_files()
    assert new != old and new.name.split("-")[0] == old.name.split("-")[0]
    assert opened == [("model.onnx", True), ("model.onnx", True)]


def test_a_damaged_kept_graph_is_made_again(tmp_path, exported, opened) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(exported.read_bytes())
    reference = OnnxRuntimeNetwork(source, keep_optimized=False)(pixels())
    OnnxRuntimeNetwork(source)
    (kept,) = kept_files()
    kept.write_bytes(b"half a file")
    network = OnnxRuntimeNetwork(source)
    assert opened[-2:] == [(kept.name, False), ("model.onnx", True)]
    assert kept.read_bytes() != b"half a file"
    assert np.array_equal(network(pixels()), reference)


def test_an_unwritable_cache_only_costs_the_optimisation(tmp_path, monkeypatch, exported):
    blocked = tmp_path / "cache"
    blocked.write_bytes(b"a file where the cache folder should be")
    monkeypatch.setenv("DEEPLAB_EXPORT_CACHE", str(blocked))
    network = OnnxRuntimeNetwork(exported)
    assert network(pixels()).shape == (1, 21, 37, 50)
    assert blocked.read_bytes() == b"a file where the cache folder should be"


def test_a_corrupt_source_is_one_error_and_keeps_nothing(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"not protobuf")
    with pytest.raises(ModelLoadError) as caught:
        OnnxRuntimeNetwork(source)
    message = str(caught.value)
    assert message.startswith(f"{source} is not a readable ONNX model (")
    assert message.endswith("). Export it again with `deeplab export`.")
    assert "\n" not in message and kept_files() == []


def test_openvino_keeps_its_compiled_network_in_the_cache(tmp_path, monkeypatch, exported):
    first = OpenVinoNetwork(exported)
    (blob,) = (cache_dir() / "openvino").glob("*.blob")
    second = OpenVinoNetwork(exported)  # loaded from the blob
    assert sorted((cache_dir() / "openvino").glob("*.blob")) == [blob]
    assert np.array_equal(first(pixels()), second(pixels()))
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the cache folder should be")
    monkeypatch.setenv("DEEPLAB_EXPORT_CACHE", str(blocked))
    assert np.array_equal(OpenVinoNetwork(exported)(pixels()), first(pixels()))
    assert blocked.read_bytes() == b"a file where the cache folder should be"
