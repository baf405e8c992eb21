"""Runtime backends of the Segmenter (inference/backends.py): ONNX Runtime and OpenVINO run the
exported network inside the same pre- and post-processing as torch, so every inference option
gives torch's masks; a model is exported once; exported files run as they are; mistakes are
one-line errors that leave nothing behind."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.threads import one_thread  # noqa: F401 (autouse)

from deeplabcli.config import InferenceConfig
from deeplabcli.errors import ConfigError, MissingDependencyError, ModelLoadError
from deeplabcli.exporting import cache as export_cache
from deeplabcli.exporting.onnx import export_onnx
from deeplabcli.exporting.references import lookup_reference
from deeplabcli.inference import Segmenter
from deeplabcli.inference.backends import (
    RuntimeModule,
    load_inference_model,
    plan_backend,
    runtime_threads,
)
from deeplabcli.inference.streams import choose_streams, planned_streams
from deeplabcli.runtimes import ExportedModel, load_exported
from deeplabcli.runtimes.cache import cache_dir

RUNTIMES = ("onnxruntime", "openvino")


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` not installed for this test: ``import`` fails, ``find_spec`` is None."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    pytest.importorskip(request.param)
    return request.param


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ResNet exported (output stride 16)."""
    pytest.importorskip("onnxruntime")
    return export_onnx(model, tmp_path_factory.mktemp("export") / "tiny.onnx")


# ---------------------------------------------------------------------- same masks as torch
OPTIONS = [
    {},
    {"scales": (0.75, 1.0, 1.25), "flip": True},
    {"output_stride": 8},
    {"tile": 32, "tile_overlap": 0.5},
]


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "scales-flip", "os8", "tiles"])
def test_every_option_gives_the_probabilities_of_torch(model, runtime, options) -> None:
    image = photo(70, 90, seed=1)
    ours = Segmenter(model, backend=runtime, **options)
    torch_probs = Segmenter(model, **options).probabilities(image)
    probs = ours.probabilities(image)
    assert ours.backend == runtime and isinstance(ours.network, RuntimeModule)
    assert ours.config.output_stride == options.get("output_stride", 16)
    assert probs.shape == (21, 70, 90)
    assert (probs - torch_probs).abs().max() < 1e-4
    assert agreement(probs.argmax(0).numpy(), torch_probs.argmax(0).numpy()) >= 0.999


def test_fit_models_batch_mixed_sizes_as_on_torch(fit_model, runtime) -> None:
    images = [photo(30 + 7 * i, 50 - 5 * i, seed=i) for i in range(5)]
    ours = Segmenter(fit_model, backend=runtime, batch_size=4)
    expected = Segmenter(fit_model).predict_batch(images)
    for mask, want in zip(ours.predict_batch(images), expected, strict=True):
        assert agreement(mask, want) >= 0.999


def test_the_library_default_is_torch_and_auto_picks_a_runtime_on_the_cpu(model) -> None:
    pytest.importorskip("onnxruntime")
    assert InferenceConfig().backend is None  # torch for a torch model
    assert Segmenter(model, device="cpu").backend == "torch"
    assert plan_backend(model, InferenceConfig(backend="auto", device="cpu")) == (
        "onnxruntime", torch.device("cpu"),
    )  # fmt: skip


def test_auto_falls_back_to_torch_without_a_runtime(model, monkeypatch) -> None:
    pytest.importorskip("openvino")
    auto = InferenceConfig(backend="auto", device="cpu")
    with monkeypatch.context() as patch:
        hide(patch, "onnxruntime")
        assert plan_backend(model, auto)[0] == "openvino"
        hide(patch, "openvino")
        assert plan_backend(model, auto)[0] == "torch"
    with monkeypatch.context() as patch:
        hide(patch, "onnx")  # the runtimes, but no exporter
        assert plan_backend(model, auto)[0] == "torch"
        segmenter = Segmenter(model, backend="auto", device="cpu")
    assert segmenter.backend == "torch" and not cache_dir().exists()


# ---------------------------------------------------------------------- the export cache
def test_a_model_is_exported_once(model, monkeypatch) -> None:
    pytest.importorskip("openvino")
    calls: list[Path] = []
    real_export = export_cache.export_onnx

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_cache, "export_onnx", counting)
    first = Segmenter(model, backend="onnxruntime")
    path = first.network.runtime.path
    written = path.stat().st_mtime_ns
    Segmenter(model, backend="onnxruntime", flip=True)  # same weights: the same file
    Segmenter(model, backend="openvino")  # converted from the cached ONNX file
    assert calls == [path] and path.stat().st_mtime_ns == written
    assert path.parent == cache_dir() and path.with_suffix(".xml").is_file()
    Segmenter(model, backend="onnxruntime", output_stride=8)  # another graph
    assert len(calls) == 2 and calls[1] != path
    assert model.output_stride == 16  # the caller's model is untouched


def test_the_reference_is_remembered_for_torch_free_runs(model, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    weights = tmp_path / "tiny.pth"
    weights.write_bytes(b"stands for the file the model was loaded from")
    assert lookup_reference(weights, "onnxruntime") is None
    segmenter = Segmenter(model, backend="onnxruntime", reference=weights)
    assert lookup_reference(weights, "onnxruntime") == segmenter.network.runtime.path
    assert lookup_reference(weights, "onnxruntime", 8) is None  # remembered per output stride
    Segmenter(model, backend="onnxruntime", reference=False)  # unknown: nothing remembered
    assert len(list((cache_dir() / "refs").iterdir())) == 1


# ---------------------------------------------------------------------- exported files
def test_an_exported_file_runs_on_its_runtime_or_on_openvino(model, onnx_file) -> None:
    exported = load_inference_model(onnx_file)
    assert isinstance(exported, ExportedModel) and exported.backend == "onnxruntime"
    image = photo(41, 57, seed=3)
    expected = Segmenter(model, scales=(0.5, 1.0), flip=True).predict(image)
    own = Segmenter(exported, scales=(0.5, 1.0), flip=True, output_stride=16)
    assert own.backend == "onnxruntime" and own.network.runtime is exported.network
    assert agreement(own.predict(image), expected) >= 0.999
    pytest.importorskip("openvino")
    other = Segmenter(exported, backend="openvino", scales=(0.5, 1.0), flip=True)
    assert other.backend == "openvino" and agreement(other.predict(image), expected) >= 0.999
    on_openvino = load_inference_model(onnx_file, InferenceConfig(backend="openvino"))
    assert on_openvino.backend == "openvino"


def test_exported_file_mistakes_are_one_line_errors(onnx_file, tmp_path) -> None:
    exported = load_exported(onnx_file)
    with pytest.raises(ConfigError) as error:
        Segmenter(exported, output_stride=8)
    assert str(error.value) == (
        f"{onnx_file} was exported at output stride 16, which an exported graph cannot switch. "
        "Export the model again with --os 8 (deeplab export MODEL -o FILE --os 8), or leave "
        "--os out."
    )
    no_torch = (
        f"{onnx_file} is an exported model, with no torch weights in it, so it cannot run on "
        "--backend torch. Use --backend auto, onnxruntime or openvino, or the model it was "
        "exported from (deeplab info shows its provenance)."
    )
    with pytest.raises(ConfigError) as error:
        Segmenter(exported, backend="torch")
    assert str(error.value) == no_torch
    with pytest.raises(ConfigError) as error:
        load_inference_model(onnx_file, InferenceConfig(backend="torch"))
    assert str(error.value) == no_torch
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelLoadError) as error:
        load_inference_model(xml)
    assert str(error.value) == (
        f"{xml} has no model.bin beside it: OpenVINO IR is the .xml and its .bin. Copy both, "
        "or export again."
    )


def test_a_static_size_export_refuses_other_input_sizes(fit_model, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    path = export_onnx(fit_model, tmp_path / "static.onnx", static_size=(48, 48))
    exported = load_exported(path)
    image = photo(30, 40)
    expected = Segmenter(fit_model).predict(image)
    assert agreement(Segmenter(exported).predict(image), expected) >= 0.999
    segmenter = Segmenter(exported, scales=(0.5, 1.0))
    with pytest.raises(ConfigError) as error:
        segmenter.check_size((30, 40), "'a' (a.png)")
    assert str(error.value) == (
        f"{path} takes only 48×48 inputs (exported with --static-size), but the 40×30 image "
        "'a' (a.png) needs a 24×24 input. Export the model again without --static-size, or "
        "use it with the scales and images it was exported for."
    )
    with pytest.raises(ConfigError):
        segmenter.predict(image)  # checked before the network runs


# ---------------------------------------------------------------------- devices, extras, streams
def test_runtimes_run_on_the_cpu(model) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(ConfigError) as error:
        Segmenter(model, backend="onnxruntime", device="cuda")
    assert str(error.value) == (
        "the onnxruntime backend runs on the CPU, not on cuda. Use --device cpu (or auto) with "
        "--backend onnxruntime, or --backend torch to run on cuda."
    )
    assert not cache_dir().exists()  # refused before exporting
    assert Segmenter(model, backend="onnxruntime", device="auto").device == torch.device("cpu")


@pytest.mark.parametrize(
    ("backend", "extra", "packages"),
    [("onnxruntime", "onnx", "onnx onnxruntime"), ("openvino", "openvino", "openvino onnx nncf")],
)
def test_a_missing_runtime_is_one_line_naming_the_pip_command(
    model, monkeypatch, backend, extra, packages
) -> None:
    hide(monkeypatch, backend)
    with pytest.raises(MissingDependencyError) as error:
        Segmenter(model, backend=backend)
    assert str(error.value) == (
        f"the {backend} backend needs {backend}, which is not installed. Install it from the "
        f'deeplabcli checkout with pip install ".[{extra}]" (pipx: pipx inject deeplabcli '
        f'{packages}; from PyPI once published: pip install "deeplabcli[{extra}]")'
        "."
    )
    assert not cache_dir().exists()


def test_runtime_streams_are_planned_before_the_sessions_open(model, onnx_file, runtime) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = InferenceConfig(backend=runtime, device="cpu")
        two = 2 if runtime == "onnxruntime" else 1  # OpenVINO runs one request at a time
        assert planned_streams(model, cpu, runtime, batches=5) == two
        assert planned_streams(load_exported(onnx_file), cpu, runtime, batches=5) == two
        assert planned_streams(model, cpu, runtime, batches=1) == 1
        assert planned_streams(model, cpu.replace(batch_size=4), runtime, batches=5) == 1
        assert planned_streams(model, cpu.replace(streams=3), runtime, batches=5) == 3
        assert planned_streams(model, cpu, "torch", batches=5) is None  # choose_streams'
        segmenter = Segmenter(model, cpu.replace(streams=2))
        assert choose_streams(segmenter, None, batches=5) == 2
        assert choose_streams(segmenter, None, batches=1) == 1
        assert runtime_threads(2) == 1 and runtime_threads() == 2
        if runtime == "onnxruntime":  # each stream's calls run on one thread
            options = segmenter.network.runtime.session.get_session_options()
            assert options.intra_op_num_threads == 1
        exported = load_exported(onnx_file)
        assert Segmenter(exported, streams=2).network.runtime is not exported.network
    finally:
        torch.set_num_threads(threads)
