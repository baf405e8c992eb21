"""`deeplab train | finetune` through click's CliRunner: options, config files, every bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support.synthetic import SHAPE_CLASSES, make_shapes_folder, make_shapes_voc
from torch.nn import functional as F

from deeplabcli import build_model
from deeplabcli.cli import main
from deeplabcli.cli.train import read_config_file
from deeplabcli.config import VOC_CLASSES, TrainConfig
from deeplabcli.errors import ConfigError
from deeplabcli.models.heads import ASPPPooling
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
    assert re.fullmatch(  # the routes that keep the recipe's step come first
        r"Error: training with 2 crops of 100000x100000 per process needs about [\d.]+ GiB, "
        r"but cpu has [\d.]+ GiB available\. Keep the step with --accumulate 2 \(1 crop per "
        r"micro-batch\) or more processes under torchrun; else lower --crop-size or "
        r"--batch-size\.",
        error_line(result),
    )
    split = run("train", "--data-root", voc, *FAST, "--crop-size", "100000", "--accumulate", "2",
                "--freeze-bn", "--out", tmp_path / "r")  # fmt: skip
    assert re.fullmatch(
        r"Error: training with one crop of 100000x100000 per micro-batch needs about [\d.]+ "
        r"GiB, but cpu has [\d.]+ GiB available\. Lower --crop-size \(a micro-batch of one "
        r"crop is the smallest step\)\.",
        error_line(split),
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


def test_bad_accumulation_and_deterministic_runs(
    voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ("--out", tmp_path / "r")
    zero = run("train", "--data-root", voc, *FAST, "--accumulate", "0", *out)
    assert zero.exit_code == 2
    assert error_line(zero) == (
        "Error: Invalid value for '--accumulate': 0 is not in the range x>=1."
    )
    with pytest.raises(ConfigError, match=r"^accumulate must be positive\."):
        TrainConfig(accumulate=0)
    uneven = run("train", "--data-root", voc, *FAST, "--batch-size", "4", "--accumulate", "3", *out)
    assert uneven.exit_code == 1
    assert error_line(uneven) == (
        "Error: --accumulate 3 does not divide the 4 images of a step (--batch-size 4). "
        "Use a divisor of 4 (1, 2, 4)."
    )
    single = run("train", "--data-root", voc, *FAST, "--accumulate", "2", *out)  # batch 2
    assert error_line(single) == (
        "Error: batch norm cannot train on one image per micro-batch (--accumulate 2 splits each "
        "step into single images, and the image-pooling branch sees one value per channel). "
        "Use a smaller --accumulate, or --freeze-bn."
    )
    # a layer whose kernel has no deterministic implementation (max_unpool2d, also on the CPU)
    forward = ASPPPooling.forward

    def unpooling_forward(self, x):
        pooled, indices = F.max_pool2d(forward(self, x), 1, return_indices=True)
        return F.max_unpool2d(pooled, indices, 1)

    monkeypatch.setattr(ASPPPooling, "forward", unpooling_forward)
    assert run("train", "--data-root", voc, *FAST, "--iters", "1", *out).exit_code == 0
    shutil.rmtree(tmp_path / "r")
    strict = run("train", "--data-root", voc, *FAST, "--iters", "1", "--deterministic", *out)
    assert strict.exit_code == 1
    assert error_line(strict) == (
        "Error: --deterministic: PyTorch has no deterministic implementation of "
        "max_unpooling2d_forward_out (used by this model). Train without --deterministic (CPU "
        "runs are reproducible without it)."
    )
    assert "Traceback" not in strict.output
    assert not (tmp_path / "r").exists()
    assert not torch.are_deterministic_algorithms_enabled()


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


def test_reinit_classifier_with_the_same_classes(voc: Path, voc_checkpoint: Path) -> None:
    """--reinit-classifier: a fresh classifier on the checkpoint's features, same classes."""
    messages: list[str] = []
    config = TrainConfig(data_root=str(voc), init=str(voc_checkpoint), reinit_classifier=True)
    model = training_model(config, VOC_CLASSES, say=messages.append)
    source = read_safetensors(voc_checkpoint / "model.safetensors")
    state = model.state_dict()
    fresh = ["head.classifier.weight", "head.classifier.bias"]
    assert state.keys() == source.keys()
    assert [k for k in state if not torch.equal(state[k], source[k])] == fresh
    assert messages == [
        f"Re-initialised the classifier of {voc_checkpoint} (--reinit-classifier): "
        "head.classifier.weight (21, 16, 1, 1), head.classifier.bias (21,). Every other tensor "
        "was loaded."
    ]
    kept: list[str] = []
    training_model(config.replace(reinit_classifier=False), VOC_CLASSES, say=kept.append)
    assert kept == []  # without the flag, matching classes keep the classifier


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


# ---------------------------------------------------------------------- config values (issue 13)
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("crop_size = true", "crop_size must be a whole number, not true. Give a whole number "
         "(default 513)."),
        ("crop_size = 33.7", "crop_size must be a whole number, not 33.7. Give a whole number "
         "(default 513)."),
        ("batch_size = 2.5", "batch_size must be a whole number, not 2.5. Give a whole number "
         "(default 16)."),
        ('aux_loss = "no"', 'aux_loss must be true or false, not "no". Give true or false, '
         "without quotes (default false)."),
        ('image-pooling = "off"', 'image_pooling must be true or false, not "off". Give true '
         "or false, without quotes."),
        ("lr = 1e400", "lr must be a finite number, not inf. Give a finite number "
         "(default 0.007)."),
        ("[train]\nos = 8.0", "train.output_stride must be a whole number, not 8.0. Give a "
         "whole number (default 16)."),
        # the other command's table is checked too: a typo there is found by either command
        ('[finetune]\nfreeze_bn = "yes"', 'finetune.freeze_bn must be true or false, not "yes". '
         "Give true or false, without quotes (default false)."),
        # a range the value breaks, also named with the file
        ("momentum = 1.5", "momentum must be in [0, 1). Fix the training option."),
    ],
)  # fmt: skip
def test_config_file_values_are_checked_before_anything_runs(
    voc: Path, tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'data_root = "{voc}"\n{text}\n')
    out = tmp_path / "run"
    result = run("train", "--config", config, *FAST, "--iters", "1", "--out", out)
    assert result.exit_code == 1
    assert error_line(result) == f"Error: config file {config}: {problem}"
    assert result.stdout == "" and "Traceback" not in result.output
    assert not out.exists()


def test_unknown_tables_and_keys_in_a_config_file_are_refused(voc: Path, tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text(f'data_root = "{voc}"\n[trian]\ncrop_size = 65\n')  # [train], misspelt
    result = run("train", "--config", typo, *FAST, "--iters", "1", "--out", tmp_path / "a")
    assert error_line(result) == (
        f"Error: config file {typo} has a table [trian] that no command reads. Use [train] or "
        "[finetune], or keys at the top level."
    )
    key = tmp_path / "key.toml"
    key.write_text("[train]\ncrop_size = 65\nlearning_rate = 0.01\n")
    result = run("train", "--config", key, *FAST, "--iters", "1", "--out", tmp_path / "b")
    fields = ", ".join(TrainConfig.__dataclass_fields__)
    assert error_line(result) == (
        f"Error: unknown keys in config file {key}: train.learning_rate. Use: {fields}."
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_top_level_keys_and_the_commands_table_both_apply(tmp_path: Path) -> None:
    config = tmp_path / "both.toml"
    config.write_text("seed = 3\ncrop_size = 65\n[train]\ncrop_size = 97\n[finetune]\nlr = 0.5\n")
    values = read_config_file(str(config), "train")
    assert values == {"seed": 3, "crop_size": 97}
    assert read_config_file(str(config), "finetune") == {"seed": 3, "crop_size": 65, "lr": 0.5}


def test_a_non_finite_loss_stops_training_with_the_last_good_checkpoint(
    voc: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run("train", "--data-root", voc, *FAST, "--iters", "20", "--save-every", "50",
                 "--lr", "1e6", "--out", out)  # fmt: skip
    assert result.exit_code == 1
    assert re.fullmatch(
        r"Error: the training loss became nan at iteration (\d+) \(lr [\d.e+]+\), so the "
        rf"training diverged; {re.escape(str(out))} keeps its checkpoint of iteration 0 and "
        r"nothing after it\. Train again with a lower --lr, in another --out or with "
        r"--overwrite\.",
        error_line(result),
    ), result.output
    assert torch.load(out / "train_state.pt", weights_only=True)["iteration"] == 0
    weights = read_safetensors(out / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())


def test_a_run_config_with_a_wrong_type_names_the_file_on_resume(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run("train", "--data-root", voc, *FAST, "--iters", "2", "--out", out)
    assert first.exit_code == 0, first.output
    saved = out / "train_config.json"
    document = json.loads(saved.read_text())
    document["crop_size"] = "32"
    saved.write_text(json.dumps(document))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = run("train", "--out", out, "--resume")
    assert result.exit_code == 1
    assert error_line(result) == (
        f'Error: {saved}: crop_size must be a whole number, not "32". Give a whole number, '
        "without quotes (default 513)."
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_learning_rate_option_is_refused(tmp_path: Path, value: str) -> None:
    result = run("train", "--lr", value, *FAST, "--out", tmp_path / "run")
    assert (result.exit_code, error_line(result)) == (1, (
        f"Error: command-line options: lr must be a finite number, not {value}. Give a finite "
        "number (default 0.007)."
    ))  # fmt: skip
    assert not (tmp_path / "run").exists()
