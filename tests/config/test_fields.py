"""deeplabcli.config.fields: every value read from a file is type-checked against its field, and
each mistake is one line naming where it came from, the key and what the key takes."""

from __future__ import annotations

import math

import pytest

from deeplabcli.config import ModelConfig, Preprocessing, TrainConfig
from deeplabcli.config.fields import check_fields, describe, show
from deeplabcli.errors import ConfigError

WHERE = "config file run.toml"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # a bool is not an int, although True == 1 in Python
        ("crop_size", True, "crop_size must be a whole number, not true. Give a whole number "
         "(default 513)."),
        ("crop_size", 33.7, "crop_size must be a whole number, not 33.7. Give a whole number "
         "(default 513)."),
        ("batch_size", 2.5, "batch_size must be a whole number, not 2.5. Give a whole number "
         "(default 16)."),
        ("iters", "30000", 'iters must be a whole number, not "30000". Give a whole number, '
         "without quotes (default 30000)."),
        # "no" is a non-empty string: truthy, it would train the aux head
        ("aux_loss", "no", 'aux_loss must be true or false, not "no". Give true or false, '
         "without quotes (default false)."),
        ("image_pooling", "off", 'image_pooling must be true or false, not "off". Give true or '
         "false, without quotes."),
        ("freeze_bn", 1, "freeze_bn must be true or false, not 1. Give true or false "
         "(default false)."),
        # TOML reads 1e400 as infinity
        ("lr", math.inf, "lr must be a finite number, not inf. Give a finite number "
         "(default 0.007)."),
        ("momentum", math.nan, "momentum must be a finite number, not nan. Give a finite number "
         "(default 0.9)."),
        ("lr", False, "lr must be a finite number, not false. Give a finite number "
         "(default 0.007)."),
        ("multi_grid", [1, 2.5, 4], "multi_grid must be a list of whole numbers, not "
         "[1, 2.5, 4]. Give a list of whole numbers."),
        ("multi_grid", 4, "multi_grid must be a list of whole numbers, not 4. Give a list of "
         "whole numbers."),
        ("data_root", 3, "data_root must be a string, not 3. Give a string."),
        ("split", {"name": "val"}, 'split must be a string, not a table. Give a string '
         '(default "trainaug").'),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_one_line_naming_file_key_and_type(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_fields(TrainConfig, {key: value}, where=WHERE)
    assert str(caught.value) == f"{WHERE}: {message}"
    with pytest.raises(ConfigError) as caught:  # TrainConfig.from_dict runs the same check
        TrainConfig.from_dict({key: value}, where=WHERE)
    assert str(caught.value) == f"{WHERE}: {message}"


def test_valid_values_pass_and_ints_become_floats() -> None:
    data = {"crop_size": 65, "lr": 1, "aux_loss": False, "image_pooling": None,
            "multi_grid": [1, 2, 1], "data_root": "VOCdevkit", "amp": None}  # fmt: skip
    checked = check_fields(TrainConfig, data, where=WHERE)
    assert checked == {**data, "lr": 1.0}
    assert type(checked["lr"]) is float and type(checked["crop_size"]) is int
    config = TrainConfig.from_dict(data)
    assert (config.lr, config.multi_grid, config.aux_loss) == (1.0, (1, 2, 1), False)


def test_unknown_keys_are_listed_with_the_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        check_fields(Preprocessing, {"mean": [0.5] * 3, "sdt": [1, 1, 1]}, where=WHERE,
                     prefix="model.preprocessing.")  # fmt: skip
    assert str(caught.value) == (
        f"unknown keys in {WHERE}: model.preprocessing.sdt. Use: mean, std, resize, size."
    )


def test_nested_settings_are_checked_with_their_full_key() -> None:
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict({"preprocessing": {"mean": [0.5, 0.5]}}, where="ckpt/config.json")
    assert str(caught.value) == (
        "ckpt/config.json: preprocessing.mean must be a list of 3 finite numbers, not "
        "[0.5, 0.5]. Give a list of 3 finite numbers (default [0.485, 0.456, 0.406])."
    )
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict({"preprocessing": {"std": [1, 1, math.inf]}})
    assert str(caught.value) == (
        "preprocessing.std must be a list of 3 finite numbers, not [1, 1, inf]. Give a list of "
        "3 finite numbers (default [0.229, 0.224, 0.225])."
    )
    config = ModelConfig.from_dict({"preprocessing": {"mean": [0, 0, 0], "std": [1, 1, 1]}})
    assert config.preprocessing == Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_classes": "21"}, 'num_classes must be a whole number, not "21". Give a whole '
         "number, without quotes (default 21)."),
        ({"image_pooling": "off"}, 'image_pooling must be true or false, not "off". Give true '
         "or false, without quotes (default true)."),
        ({"aspp_dropout": math.nan}, "aspp_dropout must be a finite number, not nan. Give a "
         "finite number (default 0.1)."),
        ({"class_names": ["a", 2]}, 'class_names must be a list of strings, not ["a", 2]. Give '
         "a list of strings (default [])."),
        # range checks of the config itself also name the file
        ({"cascade": 9}, "cascade must be between 4 and 7 (block4..block7), got 9."),
    ],
)  # fmt: skip
def test_model_config_values_from_a_file(changes: dict, message: str) -> None:
    data = {**ModelConfig().to_dict(), **changes}
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict(data, where="ckpt/config.json")
    assert str(caught.value) == f"ckpt/config.json: {message}"


def test_descriptions_and_shown_values() -> None:
    assert describe(int) == "a whole number" and describe(bool) == "true or false"
    assert describe(tuple[float, float, float]) == "a list of 3 finite numbers"
    assert describe(tuple[int, ...] | None) == "a list of whole numbers"
    assert [show(v) for v in (True, None, 'say "hi"', -math.inf, 0.5, [1, "a"])] == [
        "true", "null", '"say \\"hi\\""', "-inf", "0.5", '[1, "a"]',
    ]  # fmt: skip
