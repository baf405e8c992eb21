"""deeplabcli.config: InferenceConfig validation and its use by PredictConfig / EvalConfig,
ModelConfig serialisation, TrainConfig.from_dict."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

import deeplabcli
from deeplabcli.config import (
    BACKENDS,
    EvalConfig,
    InferenceConfig,
    ModelConfig,
    PredictConfig,
    Preprocessing,
    TrainConfig,
)
from deeplabcli.errors import ConfigError, DeeplabError

INFERENCE_FIELDS = [
    "output_stride", "scales", "flip", "device", "amp", "batch_size", "streams", "backend",
    "tile", "tile_overlap", "tile_blend",
]  # fmt: skip


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# ---------------------------------------------------------------------- InferenceConfig
def test_inference_defaults_are_the_papers_simplest_protocol() -> None:
    config = InferenceConfig()
    assert names(InferenceConfig) == INFERENCE_FIELDS
    assert (config.output_stride, config.scales, config.flip) == (None, (1.0,), False)
    assert (config.device, config.amp, config.batch_size) == ("auto", None, 1)
    assert (config.streams, config.backend) == (None, None)  # None: torch for a torch model
    assert (config.tile, config.tile_overlap, config.tile_blend) == (None, 0.25, "falloff")
    assert BACKENDS == ("auto", "torch", "onnxruntime", "openvino")


def test_scales_become_a_tuple_of_floats() -> None:
    config = InferenceConfig(scales=[1, 2, 0.5])
    assert config.scales == (1.0, 2.0, 0.5)
    assert type(config.scales) is tuple
    assert all(type(s) is float for s in config.scales)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"scales": ()}, "scales must be positive"),
        ({"scales": (1.0, 0.0)}, "scales must be positive"),
        ({"scales": (-0.5,)}, "scales must be positive"),
        ({"scales": (1.0, math.inf)}, "scales must be finite numbers"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"batch_size": -3}, "batch size must be at least 1"),
        ({"streams": 0}, "streams must be at least 1"),
        ({"backend": "onnx"}, "unknown backend 'onnx'"),
    ],
)
def test_inference_options_are_checked(changes: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        InferenceConfig(**changes)
    assert str(caught.value) == f"{problem}. Fix the inference option."


def test_a_nan_scale_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        InferenceConfig(scales=(math.nan,))
    assert str(caught.value) == "scales must be finite numbers. Fix the inference option."


def test_valid_edge_values_are_accepted() -> None:
    config = InferenceConfig(scales=(0.25, 1.75), batch_size=1, streams=1, output_stride=8)
    assert (config.scales, config.batch_size, config.streams) == ((0.25, 1.75), 1, 1)
    assert InferenceConfig(streams=None).streams is None


def test_replace_validates_the_copy_and_leaves_the_original() -> None:
    config = InferenceConfig(batch_size=2)
    other = config.replace(flip=True)
    assert (other.flip, other.batch_size, config.flip) == (True, 2, False)
    with pytest.raises(ConfigError, match=r"^batch size must be at least 1\. Fix the inference"):
        config.replace(batch_size=0)


# ---------------------------------------------------------------------- Predict / Eval
@pytest.mark.parametrize("cls", [PredictConfig, EvalConfig])
def test_predict_and_eval_configs_hold_every_inference_option(cls: type) -> None:
    assert issubclass(cls, InferenceConfig)
    assert names(cls)[: len(INFERENCE_FIELDS)] == INFERENCE_FIELDS
    assert "what" not in names(cls)  # a ClassVar, not an option


@pytest.mark.parametrize(
    ("cls", "what", "extra"),
    [(PredictConfig, "prediction", {"format": "index"}), (EvalConfig, "evaluation", {})],
)
@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"scales": (0.0,)}, "scales must be positive"),
        ({"scales": (math.inf,)}, "scales must be finite numbers"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"streams": 0}, "streams must be at least 1"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
    ],
)
def test_inherited_checks_name_their_own_option_group(cls, what, extra, changes, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        cls(**extra, **changes)
    assert str(caught.value) == f"{problem}. Fix the {what} option."


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(PredictConfig, {"format": "overlay", "workers": 3, "overwrite": True}),
     (EvalConfig, {"dataset": "folder", "worst": 2, "limit": 5})],
)  # fmt: skip
def test_inference_property_gives_the_same_inference_options(cls: type, extra: dict) -> None:
    options = {"output_stride": 8, "scales": (0.5, 1.0, 1.5), "flip": True, "device": "cpu",
               "amp": True, "batch_size": 4, "streams": 2, "backend": "torch", "tile": 513,
               "tile_overlap": 0.5, "tile_blend": "mean"}  # fmt: skip
    config = cls(**options, **extra)
    inference = config.inference
    assert type(inference) is InferenceConfig
    assert inference == InferenceConfig(**options)
    assert dataclasses.asdict(inference) == options
    for key, value in extra.items():  # the command's own options stay on the command's config
        assert getattr(config, key) == value


def test_eval_turns_amp_off_by_default_and_its_inference_says_so() -> None:
    assert PredictConfig().amp is None
    assert EvalConfig().amp is False
    assert EvalConfig().inference.amp is False
    assert EvalConfig().inference == InferenceConfig(amp=False)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PredictConfig(format="jpeg"), "unknown format 'jpeg'. Fix the prediction option."),
        # the command's own checks come first ...
        (lambda: PredictConfig(format="jpeg", batch_size=0),
         "unknown format 'jpeg'. Fix the prediction option."),
        (lambda: PredictConfig(workers=0), "workers must be at least 1. Fix the prediction option."),
        # ... then the inference ones, then the rest
        (lambda: PredictConfig(batch_size=0, workers=0),
         "batch size must be at least 1. Fix the prediction option."),
        (lambda: EvalConfig(dataset="coco"),
         "dataset must be one of voc, folder. Fix the evaluation option."),
        (lambda: EvalConfig(dataset="coco", batch_size=0),
         "dataset must be one of voc, folder. Fix the evaluation option."),
        (lambda: EvalConfig(workers=-1), "workers must not be negative. Fix the evaluation option."),
        (lambda: EvalConfig(limit=0), "limit must be at least 1. Fix the evaluation option."),
        (lambda: EvalConfig(worst=-1),
         "the number of worst images must not be negative. Fix the evaluation option."),
    ],
)  # fmt: skip
def test_command_options_are_checked(make, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make()
    assert str(caught.value) == message


def test_eval_defaults_and_split_name() -> None:
    config = EvalConfig()
    assert (config.dataset, config.workers, config.worst, config.limit) == ("voc", 2, 8, None)
    assert EvalConfig(workers=0).workers == 0 and EvalConfig(worst=0).worst == 0
    assert config.split_name == "val"
    assert EvalConfig(dataset="folder").split_name == "all"
    assert EvalConfig(dataset="folder", split="train").split_name == "train"
    assert config.replace(worst=3) == EvalConfig(worst=3)
    assert type(config.replace(worst=3)) is EvalConfig


def test_configs_are_exported_from_the_package() -> None:
    assert deeplabcli.PredictConfig is PredictConfig
    assert deeplabcli.EvalConfig is EvalConfig
    assert deeplabcli.ModelConfig is ModelConfig
    assert deeplabcli.TrainConfig is TrainConfig
    assert issubclass(ConfigError, DeeplabError)


# ---------------------------------------------------------------------- ModelConfig
def test_model_config_round_trips_through_a_dict_and_json() -> None:
    config = ModelConfig(
        arch="custom", backbone="resnet50", num_classes=3, class_names=("bg", "cat", "dog"),
        output_stride=8, multi_grid=(1, 2, 1), aspp_rates=(3, 6, 9), head_channels=32,
        preprocessing=Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="fit",
                                    size=65),
    )  # fmt: skip
    data = config.to_dict()
    assert data["class_names"] == ["bg", "cat", "dog"]
    assert data["multi_grid"] == [1, 2, 1] and data["aspp_rates"] == [3, 6, 9]
    assert data["preprocessing"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                     "resize": "fit", "size": 65}  # fmt: skip
    assert sorted(data) == sorted(names(ModelConfig))
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    again = ModelConfig.from_dict(data)
    assert again == config
    assert isinstance(again.preprocessing, Preprocessing)
    assert again.multi_grid == (1, 2, 1) and again.class_names == ("bg", "cat", "dog")
    assert ModelConfig.from_json(config.to_json()) == config


def test_model_config_default_class_names() -> None:
    assert ModelConfig(num_classes=3).class_names == ("class_0", "class_1", "class_2")
    assert ModelConfig().class_names[:2] == ("background", "aeroplane")
    assert len(ModelConfig().class_names) == 21


def test_unknown_model_config_fields_are_named_sorted() -> None:
    data = {**ModelConfig().to_dict(), "zeta": 1, "bogus": True}
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict(data)
    assert str(caught.value) == (
        "unknown model config fields: bogus, zeta. "
        "The checkpoint may come from a newer deeplabcli; upgrade it."
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backbone": "vgg"},
         "unknown backbone 'vgg'. Use one of: resnet50, resnet101, resnet_tiny, mobilenetv2."),
        ({"num_classes": 2, "class_names": ("a",)},
         "1 class names for 2 classes. Give exactly one name per class."),
        ({"output_stride": 12},
         "output stride 12 is not possible for this model. Use one of: 8, 16, 32."),
        ({"cascade": 8}, "cascade must be between 4 and 7 (block4..block7), got 8."),
    ],
)  # fmt: skip
def test_model_config_validation_messages(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ModelConfig(**changes)
    assert str(caught.value) == message


# ---------------------------------------------------------------------- TrainConfig
def test_train_config_from_dict_reads_dashes_and_round_trips() -> None:
    config = TrainConfig.from_dict({"crop-size": 65, "batch_size": 2, "multi-grid": [1, 1, 1],
                                    "dataset": "folder"})  # fmt: skip
    assert (config.crop_size, config.batch_size, config.dataset) == (65, 2, "folder")
    assert config.multi_grid == (1, 1, 1)
    assert config.to_dict()["multi_grid"] == [1, 1, 1]
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict({}) == TrainConfig()


def test_train_config_unknown_keys_are_listed_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"lr": 0.01, "learning-rate": 0.01, "epochs": 3})
    known = ", ".join(names(TrainConfig))
    assert known.startswith("dataset, data_root, split, crop_size, arch, ")
    assert str(caught.value) == (
        f"unknown keys in training config: epochs, learning_rate. Use: {known}."
    )
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"epochs": 3}, where="run.toml")
    assert str(caught.value) == f"unknown keys in run.toml: epochs. Use: {known}."


def test_train_config_bad_values() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"iters": 0})
    assert str(caught.value) == "iters must be positive. Fix the training option."
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"crop_size": "big"})
    assert str(caught.value) == (
        'training config: crop_size must be a whole number, not "big". Give a whole number, '
        "without quotes (default 513)."
    )


# ---------------------------------------------------------------------- inference_options
def test_inference_options_from_keywords_over_defaults() -> None:
    from deeplabcli.config import inference_options

    assert inference_options(None, {}) == InferenceConfig()
    made = inference_options(None, {"flip": True, "amp": True}, amp=False, batch_size=2)
    assert made == InferenceConfig(flip=True, amp=True, batch_size=2)
    assert inference_options(None, {}, amp=False).amp is False
    with pytest.raises(ConfigError, match=r"^streams must be at least 1\. Fix the inference"):
        inference_options(None, {"streams": 0})


def test_inference_options_from_a_config_or_keywords_never_both() -> None:
    from deeplabcli.config import inference_options

    given = EvalConfig(dataset="folder", batch_size=3, scales=(0.5, 1.0))
    made = inference_options(given, {}, amp=True)  # defaults do not override a config
    assert type(made) is InferenceConfig
    assert made == InferenceConfig(batch_size=3, scales=(0.5, 1.0), amp=False)
    with pytest.raises(TypeError) as caught:
        inference_options(InferenceConfig(), {"flip": True, "device": "cpu"})
    assert str(caught.value) == (
        "give an InferenceConfig or its options by keyword, not both (flip, device)"
    )
