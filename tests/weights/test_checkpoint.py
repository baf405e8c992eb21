"""The checkpoint directory format: round trips, atomic writes, strict loading."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from deeplabcli import build_model, load_checkpoint, load_model, save_checkpoint
from deeplabcli.config import Preprocessing
from deeplabcli.errors import ModelLoadError, OutputWriteError
from deeplabcli.weights.checkpoint import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    make_provenance,
    read_checkpoint_config,
    write_model_files,
)


@pytest.fixture
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "deeplabv3_tiny",
        num_classes=3,
        class_names=("sky", "road", "car"),
        aux_head=True,
        preprocessing=Preprocessing(
            mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), resize="fit", size=97
        ),
    )
    # non-trivial BN statistics so that buffers are checked too
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _out(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(1, 3, 65, 49))


def _siblings(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir())


def test_round_trip_rebuilds_model_from_config_alone(tmp_path: Path, tiny) -> None:
    out = save_checkpoint(tiny, tmp_path / "ckpt", provenance=make_provenance("unit test"))
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    document = json.loads((out / CONFIG_NAME).read_text())
    assert document["format"] == "deeplabcli"
    assert document["format_version"] == FORMAT_VERSION
    assert document["model"]["class_names"] == ["sky", "road", "car"]
    assert document["model"]["preprocessing"]["resize"] == "fit"
    provenance = document["provenance"]
    assert provenance["source"] == "unit test"
    assert provenance["deeplabcli_version"]
    assert provenance["created"].endswith("+00:00")

    loaded = load_checkpoint(out)
    assert loaded.config == tiny.config
    assert loaded.provenance["source"] == "unit test"
    assert not loaded.training
    for key, value in _out(tiny).items():
        torch.testing.assert_close(_out(loaded)[key], value, rtol=0, atol=0)
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_model_accepts_directory_and_lone_safetensors_file(tmp_path: Path, tiny) -> None:
    out = save_checkpoint(tiny, tmp_path / "ckpt")
    lone = tmp_path / "elsewhere" / "weights.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((out / WEIGHTS_NAME).read_bytes())  # config travels in its metadata
    reference = _out(tiny)["out"]
    for ref in (out, str(out), lone):
        model = load_model(ref)
        assert model.config == tiny.config
        torch.testing.assert_close(_out(model)["out"], reference, rtol=0, atol=0)


def test_replacing_a_checkpoint_is_atomic_and_leaves_no_temporaries(tmp_path: Path, tiny) -> None:
    target = tmp_path / "ckpt"
    save_checkpoint(build_model("deeplabv3_tiny", num_classes=5), target)
    save_checkpoint(tiny, target)
    assert load_checkpoint(target).config.num_classes == 3
    assert _siblings(target) == ["ckpt"]


def test_failed_write_keeps_the_old_checkpoint(tmp_path: Path, tiny, monkeypatch) -> None:
    target = tmp_path / "ckpt"
    save_checkpoint(tiny, target)
    before = (target / WEIGHTS_NAME).read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    with pytest.raises(OutputWriteError) as caught:
        save_checkpoint(build_model("deeplabv3_tiny", num_classes=5), target)
    assert str(caught.value) == (
        f"no space left on device while writing {target}. Free space on that disk or choose "
        "another output location."
    )
    assert (target / WEIGHTS_NAME).read_bytes() == before
    assert load_checkpoint(target).config.num_classes == 3
    assert _siblings(target) == ["ckpt"]


def test_overwrite_false_refuses_and_foreign_directories_are_never_replaced(
    tmp_path: Path, tiny
) -> None:
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    with pytest.raises(OutputWriteError, match=re.escape("already exists. Pass --overwrite")):
        save_checkpoint(tiny, target, overwrite=False)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(OutputWriteError, match="holds no checkpoint, so it is not replaced"):
        save_checkpoint(tiny, foreign)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    run = save_checkpoint(tiny, tmp_path / "run")
    (run / "train_state.pt").write_bytes(b"optimizer state")
    with pytest.raises(OutputWriteError, match=r"also holds train_state\.pt \(a training run\?\)"):
        save_checkpoint(tiny, run)
    assert (run / "train_state.pt").read_bytes() == b"optimizer state"


def test_run_directory_extra_files_are_ignored_and_kept(tmp_path: Path, tiny) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"iteration": 10, "loss": 1.5}\n')
    torch.save({"iteration": 10}, run / "train_state.pt")
    write_model_files(tiny, run, provenance=make_provenance("training"))
    assert sorted(p.name for p in run.iterdir()) == [
        CONFIG_NAME, "metrics.jsonl", WEIGHTS_NAME, "train_state.pt",
    ]  # fmt: skip
    second = build_model("deeplabv3_tiny", num_classes=3, class_names=("sky", "road", "car"))
    write_model_files(second, run)  # replaces both files in place, keeps the rest
    assert (run / "metrics.jsonl").read_text().startswith('{"iteration": 10')
    loaded = load_checkpoint(run)
    assert loaded.config == second.config
    torch.testing.assert_close(_out(loaded)["out"], _out(second.eval())["out"])


def test_shape_and_key_mismatches_are_listed(tmp_path: Path, tiny) -> None:
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    document = json.loads((target / CONFIG_NAME).read_text())
    document["model"]["num_classes"] = 4
    document["model"]["class_names"] = ["a", "b", "c", "d"]
    (target / CONFIG_NAME).write_text(json.dumps(document))
    with pytest.raises(ModelLoadError) as error:
        load_checkpoint(target)
    message = str(error.value)
    assert "do not fit the model config: shape mismatch " in message
    assert "head.classifier.weight (3, 16, 1, 1) vs (4, 16, 1, 1)" in message
    assert "\n" not in message

    document["model"]["num_classes"] = 3
    document["model"]["class_names"] = ["a", "b", "c"]
    document["model"]["aux_head"] = False
    (target / CONFIG_NAME).write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match=r"unexpected aux_head\.0\.weight"):
        load_checkpoint(target)


def test_missing_tensor_is_named(tmp_path: Path, tiny) -> None:
    from safetensors.torch import save_file

    target = save_checkpoint(tiny, tmp_path / "ckpt")
    tensors = {k: v for k, v in tiny.state_dict().items() if k != "head.classifier.bias"}
    save_file(tensors, str(target / WEIGHTS_NAME))
    with pytest.raises(ModelLoadError, match=r"missing head\.classifier\.bias\."):
        load_checkpoint(target)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "Upgrade deeplabcli."),
        ({"format": "something-else"}, "is not a deeplabcli checkpoint config."),
        ({"model": {"backbone": "vgg16"}}, "unknown backbone 'vgg16'"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path: Path, tiny, edit, expected) -> None:
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    document = json.loads((target / CONFIG_NAME).read_text())
    document.update(edit)
    (target / CONFIG_NAME).write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match=expected):
        read_checkpoint_config(target)


def test_missing_weights_file(tmp_path: Path, tiny) -> None:
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    (target / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelLoadError, match=re.escape("has config.json but no model.safetensors")):
        load_checkpoint(target)


def test_weights_file_suffix_is_matched_in_any_case(tmp_path: Path, tiny) -> None:
    from deeplabcli.weights.loaders import read_weights

    out = save_checkpoint(tiny, tmp_path / "ckpt")
    upper = tmp_path / "W.SAFETENSORS"
    upper.write_bytes((out / WEIGHTS_NAME).read_bytes())
    weights = read_weights(upper)
    assert weights.keys() == tiny.state_dict().keys()


def test_checkpoints_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    import os
    import stat

    previous = os.umask(0o022)
    try:
        model = build_model("deeplabv3_tiny", num_classes=2)
        directory = save_checkpoint(model, tmp_path / "ckpt")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # not mkdtemp's 0700
        for name in (CONFIG_NAME, WEIGHTS_NAME):  # not safetensors' 0600
            assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644, name
        save_checkpoint(model, directory)  # replacing it keeps them so
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
        assert stat.S_IMODE((directory / WEIGHTS_NAME).stat().st_mode) == 0o644
    finally:
        os.umask(previous)


# ---------------------------------------------------------------------- loading checks (issue 13)
@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"arch": "deeplabv3_resnet9000"},
         " names the unknown architecture 'deeplabv3_resnet9000'. Set its model arch to one of "
         "deeplabv3_mobilenetv2, deeplabv3_mobilenetv2_tiny, deeplabv3_resnet101, "
         "deeplabv3_resnet50, deeplabv3_tiny, or upgrade deeplabcli if a newer version wrote it."),
        ({"num_classes": "3"}, ': num_classes must be a whole number, not "3". Give a whole '
         "number, without quotes (default 21)."),
        ({"aux_head": "yes"}, ': aux_head must be true or false, not "yes". Give true or false, '
         "without quotes (default false)."),
        ({"output_stride": 16.0}, ": output_stride must be a whole number, not 16.0. Give a "
         "whole number (default 16)."),
        ({"head_bn_eps": None}, ": head_bn_eps must be a finite number, not null. Give a finite "
         "number (default 1e-05)."),
    ],
)  # fmt: skip
def test_config_json_values_are_checked_when_loading(
    tmp_path: Path, tiny, changes: dict, problem: str
) -> None:
    """config.json is checked per field like any config file: one line naming the file, the
    key and the type (no Python TypeError text), and an architecture that is not registered."""
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    document = json.loads((target / CONFIG_NAME).read_text())
    document["model"].update(changes)
    (target / CONFIG_NAME).write_text(json.dumps(document))
    for load in (load_checkpoint, load_model):
        with pytest.raises(ModelLoadError) as caught:
            load(target) if load is load_checkpoint else load(str(target))
        assert str(caught.value) == f"{target / CONFIG_NAME}{problem}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_weights_holding_nan_or_inf_are_refused(tmp_path: Path, tiny, bad: float) -> None:
    with torch.no_grad():
        tiny.head.classifier.weight[0, 0] = bad
        tiny.backbone.bn1.running_var[3] = bad
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    expected = (
        f"the weights in {target} hold NaN or infinite values in backbone.bn1.running_var, "
        "head.classifier.weight. The weights are damaged or come from a training run that "
        "diverged; use another checkpoint."
    )
    with pytest.raises(ModelLoadError) as caught:
        load_checkpoint(target)
    assert str(caught.value) == expected
    with pytest.raises(ModelLoadError) as caught:  # the lone weights file, too
        load_model(str(target / WEIGHTS_NAME))
    assert str(caught.value) == expected.replace(str(target), str(target / WEIGHTS_NAME))


def test_the_second_writer_of_a_checkpoint_says_it_lost(tmp_path: Path, tiny, monkeypatch):
    """Issue 13 §2: another process writes the same checkpoint while this one is saving."""
    from support.hashes import tree_hashes

    import deeplabcli.weights.checkpoint as checkpoint

    target = tmp_path / "ckpt"
    real = checkpoint._write_files

    def meanwhile(model, directory, provenance):
        real(model, directory, provenance)
        monkeypatch.setattr(checkpoint, "_write_files", real)
        save_checkpoint(tiny, target)  # the other process renames its checkpoint in first

    monkeypatch.setattr(checkpoint, "_write_files", meanwhile)
    with pytest.raises(OutputWriteError) as caught:
        save_checkpoint(build_model("deeplabv3_tiny", num_classes=5), target, overwrite=False)
    assert str(caught.value) == (
        f"{target} was written by another process while this one was writing it, so it was not "
        "replaced. Choose another output directory, or pass --overwrite."
    )
    monkeypatch.undo()
    assert load_checkpoint(target).config.num_classes == tiny.config.num_classes
    assert _siblings(target) == ["ckpt"] and len(tree_hashes(target)) == 2
