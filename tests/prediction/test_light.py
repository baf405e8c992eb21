"""The torch-free predict path: when it applies, that its masks are torch's, and that it writes
and reports exactly what the torch pipeline does."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.exports import fill_cache
from torch.nn import functional as F

from deeplabcli import build_model, progress
from deeplabcli.config import PredictConfig, Preprocessing
from deeplabcli.errors import MissingDependencyError
from deeplabcli.exporting.onnx import export_onnx
from deeplabcli.inference import streams
from deeplabcli.inference.scores import first_argmax
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.prediction import light, pipeline
from deeplabcli.prediction.light import LightPlan, plan, predict_light, probabilities
from deeplabcli.prediction.pipeline import predict_files
from deeplabcli.runtimes import extras
from deeplabcli.runtimes.cache import CACHE_ENV
from deeplabcli.runtimes.postprocess import class_map
from deeplabcli.weights.cards import default_card
from deeplabcli.weights.resolve import load_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(torch model, its ONNX export) of a random deeplabv3_tiny (resize "none", 21 classes)."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory):
    """(the default model, its ONNX export): MobileNetV2, images fitted into 513×513."""
    model = load_model(None)
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "default.onnx")


def photo(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def torch_scores(logits: np.ndarray, content, size, align_corners: bool) -> torch.Tensor:
    """What the Segmenter computes from one input's logits: crop, F.interpolate (C, H, W)."""
    crop = torch.from_numpy(np.ascontiguousarray(logits[:, : content[0], : content[1]]))
    return F.interpolate(crop[None], size=size, mode="bilinear", align_corners=align_corners)[0]


# ---------------------------------------------------------------------- logits → class maps
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    ("logits_size", "content", "size"),
    [
        ((13, 17), (13, 17), (40, 61)),  # upsampling both axes
        ((33, 33), (25, 33), (17, 12)),  # downsampling, a cropped region
        ((20, 30), (20, 30), (20, 75)),  # one axis unchanged
        ((9, 11), (7, 11), (7, 11)),  # only cropped
    ],
)
def test_class_maps_and_probabilities_are_torchs_bit_for_bit(
    logits_size, content, size, align_corners
) -> None:
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((21, *logits_size)) * 4).astype(np.float32)
    scores = torch_scores(logits, content, size, align_corners)
    mask = class_map(logits, content, size, align_corners)
    assert mask.dtype == np.uint8 and mask.shape == size
    assert np.array_equal(mask, first_argmax(scores).numpy())
    probs = probabilities(logits, content, size, align_corners)
    assert probs.dtype == np.float32 and probs.shape == (21, *size)
    np.testing.assert_allclose(
        probs, scores.softmax(0).numpy(), rtol=1e-4, atol=1e-6
    )  # float16 files
    assert np.allclose(probs.sum(0), 1, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_class_maps_of_smooth_logits_are_torchs_too(align_corners: bool) -> None:
    """Regions where one class wins at every source pixel (taken without interpolating) and
    their borders (interpolated): the whole map is still torch's."""
    rng = np.random.default_rng(3)
    blobs = rng.standard_normal((21, 5, 6)).astype(np.float32)
    logits = np.repeat(np.repeat(blobs, 9, axis=1), 9, axis=2)  # (21, 45, 54) plateaus
    logits += rng.standard_normal(logits.shape).astype(np.float32) * 0.05
    for content, size in (((45, 54), (97, 131)), ((40, 54), (23, 30))):
        scores = torch_scores(logits, content, size, align_corners)
        mask = class_map(logits, content, size, align_corners)
        assert np.array_equal(mask, first_argmax(scores).numpy())
        assert len(np.unique(mask)) > 5


def test_ties_go_to_the_first_class_and_many_classes_give_int64() -> None:
    rng = np.random.default_rng(2)
    logits = rng.integers(0, 3, (6, 8, 9)).astype(np.float32)  # many equal maxima
    mask = class_map(logits, (8, 9), (8, 9), False)
    assert np.array_equal(mask, np.argmax(logits, axis=0))  # numpy: the first maximum
    assert np.array_equal(mask, first_argmax(torch.from_numpy(logits)).numpy())
    wide = rng.standard_normal((300, 4, 5)).astype(np.float32)
    mask = class_map(wide, (4, 5), (9, 7), False)
    assert mask.dtype == np.int64
    assert np.array_equal(mask, first_argmax(torch_scores(wide, (4, 5), (9, 7), False)).numpy())


# ---------------------------------------------------------------------- when it applies
def cli_config(**options) -> PredictConfig:
    """A PredictConfig as `deeplab predict` builds it (--backend auto)."""
    return PredictConfig(**{"backend": "auto", **options})


def test_a_reference_runs_light_once_its_export_is_cached(tmp_path, monkeypatch, tiny) -> None:
    model, _ = tiny
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(b"weights")  # a file reference: its identity is its path, size and time
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert plan(str(ckpt), ["a.jpg"], cli_config()) is None  # cold cache: the pipeline
    cached = fill_cache(tmp_path / "cache", model, reference=ckpt)
    assert plan(str(ckpt), ["a.jpg"], cli_config()) == LightPlan(cached, "onnxruntime")
    assert plan(str(ckpt), ["a.jpg"], cli_config(backend="onnxruntime")) == LightPlan(
        cached, "onnxruntime"
    )
    assert plan(str(ckpt), ["a.jpg"], cli_config(output_stride=8)) is None  # another graph
    shipped = default_card().beside(default_card().export.file)  # auto: its shipped int8
    assert plan(None, ["a.jpg"], cli_config()) == LightPlan(shipped, "onnxruntime")
    assert plan(None, ["a.jpg"], cli_config(backend="onnxruntime")) is None  # float: not cached
    ckpt.write_bytes(b"new weights")  # a changed file is another model
    assert plan(str(ckpt), ["a.jpg"], cli_config()) is None


def test_a_large_cached_model_in_bfloat16_leaves_auto_to_the_pipeline(
    tmp_path, monkeypatch, tiny
) -> None:
    """Where predict would run a large model in bfloat16 (precision.py), ``auto`` does not run
    its cached float export on the torch-free path: the pipeline picks OpenVINO/torch bf16."""
    model, _ = tiny
    ckpt = tmp_path / "big.safetensors"
    ckpt.write_bytes(b"weights")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cached = fill_cache(tmp_path / "cache", model, reference=ckpt)
    monkeypatch.setattr(light, "SMALL_MODEL_BYTES", 0)  # the tiny export counts as large
    monkeypatch.setattr(light, "native_bf16", lambda: False)
    assert plan(str(ckpt), ["a.jpg"], cli_config()) == LightPlan(cached, "onnxruntime")
    monkeypatch.setattr(light, "native_bf16", lambda: True)
    assert plan(str(ckpt), ["a.jpg"], cli_config()) is None
    assert plan(str(ckpt), ["a.jpg"], cli_config(amp=False)) == LightPlan(cached, "onnxruntime")
    asked = cli_config(backend="onnxruntime")  # a named runtime runs as asked
    assert plan(str(ckpt), ["a.jpg"], asked) == LightPlan(cached, "onnxruntime")


def test_exported_files_run_light_on_their_runtime(tmp_path: Path, tiny) -> None:
    _, onnx = tiny
    assert plan(str(onnx), ["a.jpg"], cli_config()) == LightPlan(onnx, "onnxruntime")
    assert plan(str(onnx), ["a.jpg"], cli_config(backend="openvino")) == LightPlan(onnx, "openvino")
    xml = tmp_path / "m.xml"
    assert plan(str(xml), ["a.jpg"], cli_config()) == LightPlan(xml, "openvino")
    assert plan(str(onnx), ["a.jpg"], cli_config(output_stride=16)) is None  # the pipeline says


def test_what_only_the_torch_pipeline_does_keeps_it(tmp_path, monkeypatch, tiny) -> None:
    _, onnx = tiny
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    refused = {
        "torch backend": (cli_config(backend="torch"), ["a.jpg"]),
        "scales": (cli_config(scales=(1.0, 1.5)), ["a.jpg"]),
        "flip": (cli_config(flip=True), ["a.jpg"]),
        "tiles": (cli_config(tile=513), ["a.jpg"]),
        "cuda": (cli_config(device="cuda"), ["a.jpg"]),
        "a video": (cli_config(), ["a.jpg", str(video)]),
    }
    for why, (config, inputs) in refused.items():
        assert plan(str(onnx), inputs, config) is None, why
    assert plan(str(onnx), ["a.jpg", "more.mp4"], cli_config()) is not None  # no such video
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun shards inputs across processes
    assert plan(str(onnx), ["a.jpg"], cli_config()) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert plan(str(onnx), ["a.jpg"], cli_config()) is not None
    monkeypatch.setattr(light, "cuda_present", lambda: True)  # --device auto means CUDA
    assert plan(str(onnx), ["a.jpg"], cli_config()) is None
    assert plan(str(onnx), ["a.jpg"], cli_config(device="cpu")) is not None


def test_a_named_runtime_that_is_missing_is_one_line(monkeypatch, tiny) -> None:
    _, onnx = tiny
    monkeypatch.setattr(extras, "backend_installed", lambda backend: backend == "torch")
    with pytest.raises(MissingDependencyError) as caught:
        plan(str(onnx), ["a.jpg"], cli_config(backend="openvino"))
    assert str(caught.value) == (
        "the openvino backend needs openvino, which is not installed. Install it from the "
        'deeplabcli checkout with pip install ".[openvino]" (pipx: pipx inject deeplabcli '
        'openvino onnx nncf; from PyPI once published: pip install "deeplabcli[openvino]").'
    )
    monkeypatch.setattr(light, "backend_installed", lambda backend: backend == "torch")
    assert plan(str(onnx), ["a.jpg"], cli_config()) is None  # auto: the pipeline says what to do


# ---------------------------------------------------------------------- same masks as torch
def test_masks_agree_with_torch_on_real_photos_and_voc_images(
    tmp_path: Path, photos_dir: Path, voc_root: Path, default_model
) -> None:
    model, onnx = default_model
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:20]
    images = sorted(photos_dir.iterdir()) + [voc_root / "JPEGImages" / f"{i}.jpg" for i in ids]
    config = PredictConfig(output=str(tmp_path / "out"), format="index")
    summary = predict_light(
        LightPlan(onnx, "onnxruntime"), [str(p) for p in images], config, progress=False
    )
    assert (summary.written, summary.failed) == (29, 0)
    segmenter = Segmenter(model, device="cpu", backend="torch")
    agreement = {}
    for image in images:
        mask = np.asarray(Image.open(tmp_path / "out" / f"{image.stem}.png"))
        agreement[image.name] = float((mask == segmenter.predict(image)).mean())
    print("agreement with torch:", agreement)
    assert min(agreement.values()) >= 0.999, agreement


# ---------------------------------------------------------------------- same files and records
def scene(root: Path, suffix: str = ".png") -> list[str]:
    """Inputs: three photos of different sizes, a corrupt JPEG, a missing file; b's output
    (``b<suffix>``) already exists (skipped)."""
    photo(root / "in" / "a.png", 30, 40, 0)
    photo(root / "in" / "b.png", 25, 33, 1)
    photo(root / "in" / "c.jpg", 41, 17, 2)
    (root / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "out").mkdir()
    (root / "out" / f"b{suffix}").write_bytes(b"an earlier mask")
    return [str(root / "in"), str(root / "missing.png")]


def comparable(summary, root: Path) -> list[dict]:
    """The records with ``root`` as ``<root>``, without timings, class shares (which follow
    the masks) and the backend (torch or onnxruntime)."""
    records = []
    for result in summary.results:
        record = {k: v for k, v in result.to_json().items() if k not in ("seconds", "classes")}
        if record.pop("backend", None) not in (None, "torch", "onnxruntime"):
            raise AssertionError(f"unexpected backend in {record}")
        text = json.dumps(record).replace(str(root), "<root>")
        records.append(json.loads(text))
    return sorted(records, key=lambda r: r["input"])


def read_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def both_paths(tmp_path: Path, tiny, build, **options):
    """{"torch": (summary, files), "light": (summary, files)}: the pipeline with the tiny model
    and the light path with its export, each on a fresh ``build(root)`` scene."""
    model, onnx = tiny
    runs = {}
    for path in ("torch", "light"):
        root = tmp_path / path
        inputs = build(root)
        config = PredictConfig(output=str(root / "out"), **options)
        if path == "torch":
            summary = predict_files(model, inputs, config, progress=False)
        else:
            summary = predict_light(LightPlan(onnx, "onnxruntime"), inputs, config, progress=False)
        runs[path] = (summary, read_files(root / "out") if (root / "out").is_dir() else {})
    return runs


@pytest.mark.parametrize("fmt", ["palette", "overlay", "probs", "confidence"])
def test_same_files_and_records_as_the_pipeline(tmp_path: Path, tiny, fmt: str) -> None:
    suffix = ".npz" if fmt == "probs" else ".png"
    runs = both_paths(tmp_path, tiny, lambda root: scene(root, suffix), format=fmt)
    (torch_summary, torch_files), (light_summary, light_files) = runs["torch"], runs["light"]
    ours, theirs = (
        comparable(light_summary, tmp_path / "light"),
        comparable(torch_summary, tmp_path / "torch"),
    )
    assert ours == theirs
    statuses = [r["status"] for r in ours]
    assert statuses == ["written", "skipped", "failed", "written", "failed"]
    counts = [(s.written, s.skipped, s.failed) for s in (light_summary, torch_summary)]
    assert {r.backend for r in light_summary.results if r.status == "written"} == {"onnxruntime"}
    assert counts == [(2, 1, 2), (2, 1, 2)]
    assert sorted(light_files) == sorted(torch_files) == ["a" + suffix, "b" + suffix, "c" + suffix]
    assert light_files["b" + suffix] == b"an earlier mask"  # skipped: untouched
    for name in ("a" + suffix, "c" + suffix):
        ours, theirs = io.BytesIO(light_files[name]), io.BytesIO(torch_files[name])
        if fmt == "probs":  # float16 probabilities: equal to their rounding
            ours, theirs = np.load(ours), np.load(theirs)
            assert list(ours["classes"]) == list(theirs["classes"])
            difference = ours["probs"].astype(np.float32) - theirs["probs"].astype(np.float32)
            assert np.abs(difference).max() <= 1e-3
        elif fmt == "confidence":  # 0..255 levels of the top probability
            ours, theirs = (np.asarray(Image.open(f), dtype=np.int16) for f in (ours, theirs))
            assert np.abs(ours - theirs).max() <= 1
        else:  # the same masks, encoded alike
            assert light_files[name] == torch_files[name], name
    shares = {  # the classes of the same masks, in the same order (shares to float rounding)
        path: [[c["index"] for c in r.classes] for r in summary.results if r.status == "written"]
        for path, (summary, _) in runs.items()
    }
    assert shares["light"] == shares["torch"] and all(shares["light"])


def test_an_unwritable_output_fails_each_image_as_in_the_pipeline(tmp_path, tiny) -> None:
    def build(root: Path) -> list[str]:
        photo(root / "in" / "a.png", 30, 40, 0)
        photo(root / "in" / "b.png", 25, 33, 1)
        (root / "out").write_bytes(b"a file where the output folder should be")
        return [str(root / "in")]

    runs = both_paths(tmp_path, tiny, build)
    light_summary, torch_summary = runs["light"][0], runs["torch"][0]
    root = tmp_path / "light"
    assert comparable(light_summary, root) == comparable(torch_summary, tmp_path / "torch")
    assert [r.message for r in light_summary.results] == [
        f"{root / 'in' / name}: cannot write {root / 'out' / name} (Not a directory). "
        "Choose a writable output location with -o."
        for name in ("a.png", "b.png")
    ]
    assert (root / "out").read_bytes() == b"a file where the output folder should be"


def test_records_come_in_input_order_and_a_bar_only_for_several(tmp_path, monkeypatch, tiny):
    _, onnx = tiny
    bars = []
    real_bar = progress.progress_bar

    def recorded_bar(total, description, **options):
        bars.append((total, description, options))
        return real_bar(total, description, **options)

    monkeypatch.setattr(progress, "progress_bar", recorded_bar)
    fast = LightPlan(onnx, "onnxruntime")
    one = photo(tmp_path / "one.png", 20, 24)
    predict_light(fast, [str(one)], PredictConfig(output=str(tmp_path / "one_mask.png")))
    assert bars == []  # one image: no bar (and rich is not even imported)
    for index, name in enumerate(["e.png", "d.png", "c.png", "a.png"]):
        photo(tmp_path / "many" / name, 20 + index, 24, index)
    (tmp_path / "many" / "b.png").write_bytes(b"not a PNG")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "d.png").write_bytes(b"an earlier mask")
    seen = []
    inputs = [str(tmp_path / "many"), str(tmp_path / "gone.png")]
    config = PredictConfig(output=str(tmp_path / "masks"))
    summary = predict_light(fast, inputs, config, on_result=seen.append)
    assert bars == [(6, "Predicting", {"unit": "img"})]
    order = [(Path(r.input).name, r.status) for r in seen]
    assert order == [
        ("gone.png", "failed"), ("d.png", "skipped"), ("a.png", "written"),
        ("b.png", "failed"), ("c.png", "written"), ("e.png", "written"),
    ]  # fmt: skip
    assert seen == summary.results
    predict_light(fast, inputs, config.replace(overwrite=True), progress=False)
    assert len(bars) == 1


def test_static_size_exports(tmp_path: Path, monkeypatch, tiny) -> None:
    """A graph of one input size runs light when every image's input has that size (a model
    that fits images into S×S exported at S×S); otherwise the pipeline checks each image."""
    model, _ = tiny
    static = export_onnx(model, tmp_path / "static.onnx", static_size=(30, 40))
    right, wrong = (
        photo(tmp_path / "in" / "a.png", 30, 40),
        photo(tmp_path / "in" / "b.png", 20, 20),
    )
    summary = predict_light(
        LightPlan(static, "onnxruntime"), [str(right), str(wrong)],
        PredictConfig(output=str(tmp_path / "out")), progress=False,
    )  # fmt: skip
    records = {Path(r.input).name: r for r in summary.results}
    assert {name: (r.status, r.backend) for name, r in records.items()} == {
        "a.png": ("written", "onnxruntime"), "b.png": ("failed", None),
    }  # fmt: skip
    assert records["b.png"].message == (
        f"{wrong}: {static} takes only 40×30 inputs (exported with --static-size), but the 20×20 "
        "image needs a 20×20 input. Export the model again without --static-size, or use it "
        "with the scales and images it was exported for."
    )
    torch.manual_seed(0)
    prep = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="fit", size=48)
    fit = build_model("deeplabv3_mobilenetv2_tiny", preprocessing=prep).eval()
    square = export_onnx(fit, tmp_path / "square.onnx", static_size=(48, 48))

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the torch pipeline ran")

    monkeypatch.setattr(pipeline, "predict_files", no_pipeline)
    summary = predict_light(
        LightPlan(square, "onnxruntime"), [str(right), str(wrong)],
        PredictConfig(output=str(tmp_path / "fit"), format="index"), progress=False,
    )  # fmt: skip
    assert summary.written == 2
    mask = np.asarray(Image.open(tmp_path / "fit" / "b.png"))
    assert np.array_equal(mask, Segmenter(fit, device="cpu", backend="torch").predict(wrong))


# ---------------------------------------------------------------------- two network streams
def spy_on_network(monkeypatch, pause=None) -> dict:
    """Record what predict_light opens (``threads``) and on which threads the network runs
    (``names``; ``most``: the most calls at once). ``pause(call_index)`` runs inside a call."""
    seen: dict = {"threads": [], "names": [], "most": 0, "sessions": []}
    lock, active = threading.Lock(), [0]
    real_load = light.load_exported

    def load(path, backend, *, threads=None):
        model = real_load(path, backend, threads=threads)
        network = model.network

        def spied(x):
            with lock:
                index = len(seen["names"])
                seen["names"].append(threading.current_thread().name)
                active[0] += 1
                seen["most"] = max(seen["most"], active[0])
            try:
                if pause is not None:
                    pause(index)
                return network(x)
            finally:
                with lock:
                    active[0] -= 1

        seen["threads"].append(threads)
        seen["sessions"].append(network)
        return dataclasses.replace(model, network=spied)

    monkeypatch.setattr(light, "load_exported", load)
    return seen


def test_the_streams_rule_copies_the_pipelines(tmp_path: Path, monkeypatch, tiny) -> None:
    assert light.SMALL_MODEL_BYTES == streams.SMALL_MODEL_BYTES
    assert light.STREAMED_RUNTIMES == streams.STREAMED_RUNTIMES
    _, onnx = tiny
    small = LightPlan(onnx, "onnxruntime")
    monkeypatch.setattr(light, "available_cpus", lambda: 2)
    assert light.choose_streams(small, 1) == 1  # one image: nothing to run beside it
    assert light.choose_streams(small, 40) == 2
    assert light.choose_streams(LightPlan(onnx, "openvino"), 40) == 1  # runs one request
    big = tmp_path / "big.onnx"
    with big.open("wb") as f:  # sparse: the size is what counts
        f.truncate(streams.SMALL_MODEL_BYTES + 1)
    assert light.choose_streams(LightPlan(big, "onnxruntime"), 40) == 1
    assert light.choose_streams(small, 40, requested=1) == 1  # --streams wins
    assert light.choose_streams(small, 40, requested=3) == 3
    assert light.choose_streams(small, 2, requested=3) == 2  # never more than the images
    assert light.choose_streams(small, 1, requested=3) == 1
    monkeypatch.setattr(light, "available_cpus", lambda: 1)
    assert light.choose_streams(small, 40) == 1
    assert light.choose_streams(small, 40, requested=2) == 2


def test_many_images_on_a_small_model_run_two_streams_of_one_thread(
    tmp_path: Path, monkeypatch, tiny
) -> None:
    _, onnx = tiny
    inputs = [str(photo(tmp_path / "in" / f"{i}.png", 20 + i, 24, i)) for i in range(6)]
    monkeypatch.setattr(light, "available_cpus", lambda: 2)
    together = threading.Barrier(2, timeout=10)  # the first two images meet inside the network
    seen = spy_on_network(monkeypatch, lambda index: index < 2 and together.wait())
    fast = LightPlan(onnx, "onnxruntime")
    config = PredictConfig(output=str(tmp_path / "out"))
    assert predict_light(fast, inputs, config, progress=False).written == 6
    assert seen["threads"] == [1]  # 2 cores // 2 streams
    assert seen["sessions"][0].session.get_session_options().intra_op_num_threads == 1
    assert seen["most"] == 2 and len(seen["names"]) == 6
    assert {name.rsplit("_", 1)[0] for name in seen["names"]} == {"deeplab-net"}

    seen = spy_on_network(monkeypatch)  # one image: the calling thread, the runtime's threads
    predict_light(fast, inputs[:1], config.replace(overwrite=True), progress=False)
    assert seen["threads"] == [None] and seen["names"] == [threading.current_thread().name]
    seen = spy_on_network(monkeypatch)  # --streams 1: as before
    predict_light(fast, inputs, config.replace(overwrite=True, streams=1), progress=False)
    assert seen["threads"] == [None] and seen["most"] == 1
    assert set(seen["names"]) == {threading.current_thread().name}
    seen = spy_on_network(monkeypatch)  # --streams 3 on 6 cores; threads named by the caller
    monkeypatch.setattr(light, "available_cpus", lambda: 6)
    predict_light(fast, inputs, config.replace(overwrite=True, streams=3), progress=False)
    assert seen["threads"] == [2] and len(set(seen["names"])) <= 3
    seen = spy_on_network(monkeypatch)
    predict_light(fast, inputs, config.replace(overwrite=True), progress=False, threads=4)
    assert seen["threads"] == [4]
    assert {name.rsplit("_", 1)[0] for name in seen["names"]} == {"deeplab-net"}


def test_two_streams_report_in_input_order_past_a_bad_image(tmp_path, monkeypatch, tiny):
    _, onnx = tiny
    names = ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    for index, name in enumerate(names):
        photo(tmp_path / "in" / name, 20 + index, 24, index)
    (tmp_path / "in" / "c.png").write_bytes(b"not a PNG")
    monkeypatch.setattr(light, "available_cpus", lambda: 2)
    # the first image is the slowest: the others finish before it
    seen = spy_on_network(monkeypatch, lambda index: index == 0 and time.sleep(0.5))
    records = []
    summary = predict_light(
        LightPlan(onnx, "onnxruntime"), [str(tmp_path / "in")],
        PredictConfig(output=str(tmp_path / "out")), on_result=records.append, progress=False,
    )  # fmt: skip
    assert seen["threads"] == [1]
    assert [(Path(r.input).name, r.status) for r in records] == [
        (name, "failed" if name == "c.png" else "written") for name in names
    ]
    assert records == summary.results and (summary.written, summary.failed) == (5, 1)
    assert "c.png" in records[2].message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(set(names) - {"c.png"})


def test_one_and_two_streams_write_the_same_files_for_voc_images(
    tmp_path: Path, monkeypatch, voc_root: Path, default_model
) -> None:
    _, onnx = default_model
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:8]
    images = [str(voc_root / "JPEGImages" / f"{i}.jpg") for i in ids]
    files = {}
    for count in (1, 2):
        seen = spy_on_network(monkeypatch)
        for fmt in ("index", "overlay"):
            config = PredictConfig(
                output=str(tmp_path / f"{fmt}{count}"), format=fmt, streams=count
            )
            summary = predict_light(LightPlan(onnx, "onnxruntime"), images, config, progress=False)
            assert summary.written == 8
            files[fmt, count] = read_files(tmp_path / f"{fmt}{count}")
        assert seen["most"] == count
    for fmt in ("index", "overlay"):
        assert len(files[fmt, 1]) == 8 and files[fmt, 1] == files[fmt, 2], fmt
