"""`deeplab train | finetune` through click's CliRunner: options, config files, every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support.synthetic import SHAPE_CLASSES, make_shapes_folder, make_shapes_voc

from deeplabcli import build_model
from deeplabcli.cli import main
from deeplabcli.cli.train import read_config_file
from deeplabcli.config import TrainConfig
from deeplabcli.training.init import training_model
from deeplabcli.training.stage2 import finetune_config
from deeplabcli.weights.checkpoint import read_safetensors, save_checkpoint

FAST = ("--split", "train", "--model-arch", "deeplabv3_tiny", "--init", "none", "--crop-size", "32",
        "--batch-size", "2", "--workers", "0", "-q")  # fmt: skip


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 4, "val": 2}, size=40)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"), {"train": 4}, size=40)


@pytest.fixture(scope="module")
def voc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 21-class tiny model saved as a checkpoint directory."""
    torch.manual_seed(1)
    model = build_model("deeplabv3_tiny", num_classes=21)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "voc21")


def test_train_then_refuse_resume_and_overwrite(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(
        "train", "--data-root", voc, "--split", "train", *FAST, "--iters", "2", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Trained 2 iterations, loss ")
    assert result.stdout.rstrip().endswith(f"Checkpoint: {out} (use it with --model {out}).")
    again = run(
        "train", "--data-root", voc, "--split", "train", *FAST, "--iters", "2", "--out", out
    )
    assert again.exit_code == 1
    assert error_line(again) == (
        f"Error: {out} already holds a training run. Pass --resume to continue it, "
        "--overwrite to replace it, or choose another --out."
    )
    finished = run("train", "--out", out, "--resume")  # nothing else needed to resume
    assert finished.exit_code == 0, finished.output
    assert finished.stdout.startswith("Trained 2 iterations.")
    other = run("train", "--out", out, "--resume", "--lr", "0.1", "--iters", "3")
    assert error_line(other) == (
        f"Error: {out} holds a run with other settings: lr 0.1 (saved: 0.007); iters 3 "
        "(saved: 2). Resume with the saved settings (leave those options out), or start a new "
        "run in another --out."
    )
    replaced = run("train", "--data-root", voc, "--split", "train", *FAST, "--iters", "1",
                   "--out", out, "--overwrite")  # fmt: skip
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "train_config.json").read_text())["iters"] == 1


def test_directories_that_hold_no_run(voc: Path, tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"not mine")
    for flag in ((), ("--overwrite",)):
        result = run("train", "--data-root", voc, *FAST, "--out", tmp_path / "photos", *flag)
        assert error_line(result) == (
            f"Error: {tmp_path / 'photos'} is not empty and holds no training run. "
            "Choose a new or empty --out."
        )
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"not mine"
    result = run("train", "--out", tmp_path / "nothing", "--resume")
    assert error_line(result) == (
        f"Error: {tmp_path / 'nothing'} holds no training run (train_config.json is missing). "
        "Give the run directory with --out, or start the run without --resume."
    )


def test_missing_data_root_and_empty_split(voc: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run("train", "--data-root", missing, *FAST, "--out", tmp_path / "a")
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: data root {missing} does not exist. Give --data-root (or DEEPLAB_DATA_ROOT) "
        "as .../VOCdevkit or .../VOCdevkit/VOC2012."
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing here\n")
    result = run("train", "--data-root", voc, *FAST, "--split", empty, "--out", tmp_path / "b")
    assert error_line(result) == (
        f"Error: split '{empty}' ({empty}) lists no images. Add image ids to it, one per line."
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_crop_larger_than_memory(voc: Path, tmp_path: Path) -> None:
    result = run(
        "train", "--data-root", voc, *FAST, "--crop-size", "100000", "--out", tmp_path / "r"
    )
    assert result.exit_code == 1
    assert re.fullmatch(
        r"Error: training with 2 crops of 100000x100000 per process needs about [\d.]+ GiB, "
        r"but cpu has [\d.]+ GiB available\. Lower --crop-size or --batch-size\.",
        error_line(result),
    )
    assert not (tmp_path / "r").exists()


def test_bad_options(voc: Path, tmp_path: Path) -> None:
    out = ("--out", tmp_path / "r")
    one = run("train", "--data-root", voc, *FAST, "--batch-size", "1", *out)
    assert error_line(one) == (
        "Error: batch norm cannot train on one image per step (the image-pooling branch sees "
        "one value per channel). Use --batch-size 2 or more, or --freeze-bn."
    )
    amp = run("train", "--data-root", voc, *FAST, "--amp", "--device", "cpu", *out)
    assert error_line(amp) == (
        "Error: mixed precision (--amp) needs a CUDA device. Leave --amp out or use --device cuda."
    )
    imagenet = run("train", "--data-root", voc, *FAST, "--init", "imagenet", *out)
    assert error_line(imagenet) == (
        "Error: no ImageNet weights are published for the resnet_tiny backbone of "
        "deeplabv3_tiny. Pass --init none to start from random weights, or --init REF."
    )
    grid = run("train", "--data-root", voc, *FAST, "--multi-grid", "1,x", *out)
    assert grid.exit_code == 2
    assert (
        "Invalid value for '--multi-grid': '1,x' is not a list of positive integers, e.g. 1,2,4."
        in grid.stderr
    )
    classes = run("train", "--data-root", voc, *FAST, "--num-classes", "5", *out)
    assert error_line(classes) == (
        "Error: --num-classes 5 does not match the 21 classes of the data set. "
        "Give --num-classes 21 or leave it out."
    )
    assert not (tmp_path / "r").exists()


def test_batch_size_one_with_frozen_bn(voc: Path, tmp_path: Path) -> None:
    result = run("train", "--data-root", voc, *FAST, "--batch-size", "1", "--freeze-bn",
                 "--iters", "1", "--out", tmp_path / "r")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_config_file_with_overrides(voc: Path, tmp_path: Path) -> None:
    config = tmp_path / "recipe.toml"
    config.write_text(
        "[train]\n"
        f'data-root = "{voc}"\nsplit = "train"\nmodel-arch = "deeplabv3_tiny"\ninit = "none"\n'
        "crop_size = 32\nbatch_size = 2\niters = 2\nlr = 0.01\nworkers = 0\nmulti_grid = [1, 2, 1]\n"
        "[finetune]\nlr = 0.5\n"
    )
    out = tmp_path / "run"
    result = run("train", "--config", config, "--lr", "0.02", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["lr"], saved["iters"], saved["crop_size"]) == (0.02, 2, 32)  # flag wins
    assert saved["multi_grid"] == [1, 2, 1] and saved["arch"] == "deeplabv3_tiny"
    bad = tmp_path / "bad.toml"
    bad.write_text("crop = 3\n")
    result = run("train", "--config", bad, "--out", tmp_path / "x")
    assert error_line(result).startswith(f"Error: unknown keys in config file {bad}: crop. Use: ")
    broken = tmp_path / "broken.toml"
    broken.write_text("lr = \n")
    assert error_line(run("train", "--config", broken)).startswith(
        f"Error: config file {broken} is not valid TOML ("
    )


def test_finetune_defaults_are_the_papers_second_stage(
    voc: Path, voc_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    result = run("finetune", voc_checkpoint, "--data-root", voc, "--split", "train",
                 "--crop-size", "32", "--batch-size", "2", "--iters", "1", "--workers", "0",
                 "--out", out, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = TrainConfig.from_dict(json.loads((out / "train_config.json").read_text()))
    assert (saved.freeze_bn, saved.output_stride, saved.lr, saved.iters) == (True, 8, 0.001, 1)
    assert saved.init == str(voc_checkpoint)
    assert json.loads((out / "config.json").read_text())["model"]["output_stride"] == 8
    # frozen BN: every BN tensor is still the checkpoint's after a step
    before, after = (
        read_safetensors(voc_checkpoint / "model.safetensors"),
        read_safetensors(out / "model.safetensors"),
    )
    bn = [k for k in before if "running_mean" in k]
    assert bn and all(torch.equal(before[k], after[k]) for k in bn)
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])
    stage2 = run("finetune", "--help")
    assert "[default: trainval]" in stage2.stdout


def test_class_count_change(shapes: Path, voc_checkpoint: Path, tmp_path: Path) -> None:
    args = ("finetune", voc_checkpoint, "--dataset", "folder", "--data-root", shapes,
            "--split", "train", "--crop-size", "32", "--batch-size", "2", "--iters", "1",
            "--workers", "0")  # fmt: skip
    mismatch = run(*args, "--out", tmp_path / "a")
    assert error_line(mismatch) == (
        f"Error: the model {voc_checkpoint} has 21 classes but the data set has 4. "
        "Pass --num-classes 4 to re-initialise its classifier for this data set."
    )
    result = run(*args, "--num-classes", "4", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert (
        f"Re-initialised for 4 classes ({voc_checkpoint} has 21): head.classifier.weight "
        "(4, 16, 1, 1), head.classifier.bias (4,). Every other tensor was loaded."
    ) in " ".join(result.stderr.split())
    arch = run(*args, "--num-classes", "4", "--out", tmp_path / "c")
    assert arch.exit_code == 0  # finetune has no architecture options to contradict
    wrong = run("train", "--dataset", "folder", "--data-root", shapes, "--split", "train", "--init", voc_checkpoint,
                "--num-classes", "4", "--multi-grid", "1,2,1", "--out", tmp_path / "d")  # fmt: skip
    assert error_line(wrong) == (
        f"Error: --multi-grid 1,2,1 differs from the 1,2,4 of {voc_checkpoint}: a checkpoint "
        "brings its own architecture. Leave --multi-grid out."
    )


def test_class_change_loads_every_other_tensor(shapes: Path, voc_checkpoint: Path) -> None:
    messages: list[str] = []
    config = TrainConfig(
        dataset="folder",
        data_root=str(shapes),
        init=str(voc_checkpoint),
        num_classes=4,
        aux_loss=True,
    )
    model = training_model(config, SHAPE_CLASSES, say=messages.append)
    source = read_safetensors(voc_checkpoint / "model.safetensors")
    state = model.state_dict()
    fresh = sorted(k for k in state if k not in source or source[k].shape != state[k].shape)
    assert fresh == sorted(
        ["head.classifier.weight", "head.classifier.bias"]
        + [k for k in state if k.startswith("aux_head.")]
    )
    assert all(torch.equal(state[k], source[k]) for k in state if k not in fresh)
    assert model.config.class_names == SHAPE_CLASSES and model.config.aux_head
    assert len(messages) == 1 and "aux_head.4.weight (4, 32, 1, 1)" in messages[0]


def test_example_recipe_is_the_papers() -> None:
    recipe = Path(__file__).resolve().parents[2] / "examples" / "paper_recipe.toml"
    stage1 = TrainConfig.from_dict(read_config_file(str(recipe), "train"))
    paper = TrainConfig()
    fields = ("split", "output_stride", "crop_size", "batch_size", "lr", "iters", "momentum",
              "weight_decay", "bn_momentum", "freeze_bn", "init")  # fmt: skip
    assert [getattr(stage1, f) for f in fields] == [getattr(paper, f) for f in fields]
    assert (stage1.arch, stage1.multi_grid, stage1.aspp_rates) == (
        "deeplabv3_resnet101", (1, 2, 4), (6, 12, 18),
    )  # fmt: skip
    stage2 = finetune_config("runs/r101-stage1", **read_config_file(str(recipe), "finetune"))
    assert (stage2.output_stride, stage2.lr, stage2.freeze_bn, stage2.iters) == (
        8,
        0.001,
        True,
        30000,
    )
    assert stage2.split == "trainval_bootstrap"
