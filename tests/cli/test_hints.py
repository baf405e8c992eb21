"""Every hint names an option the command has: offline failures of each command that loads a
model, read as a user would, with every ``--option`` in the one error line checked against the
command's own options (train has --init, not --model)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from support.synthetic import make_shapes_voc

from deeplabcli.cli import main


def options_of(*names: str) -> set[str]:
    command: click.Command = main
    ctx = click.Context(main)
    for name in names:
        command = command.get_command(ctx, name)  # type: ignore[union-attr]
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def error_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_voc(tmp_path_factory.mktemp("voc"), {"train": 4}, size=40)


def cases(voc: Path, tmp: Path) -> dict[tuple[str, ...], list[object]]:
    fast = ["--data-root", voc, "--split", "train", "--crop-size", "32", "--batch-size", "2",
            "--workers", "0", "-q"]  # fmt: skip
    return {
        ("train",): ["train", *fast, "--model-arch", "deeplabv3_resnet50", "--out", tmp / "a"],
        ("train", "hub init"): [
            "train",
            *fast,
            "--model-arch",
            "deeplabv3_tiny",
            "--init",
            "deeplabv3-mobilenetv2-voc",
            "--out",
            tmp / "b",
        ],
        ("finetune",): ["finetune", "deeplabv3-resnet50-voc", *fast, "--out", tmp / "c"],
        ("predict",): ["predict", tmp / "p.jpg", "--model", "deeplabv3-resnet50-voc"],
        ("download",): ["download", "resnet50-imagenet"],
        ("convert",): ["convert", "deeplabv3-mobilenetv2-voc", "-o", tmp / "d"],
        ("info",): ["info", "someone/not-cached"],
    }


def test_offline_hints_name_only_options_the_command_has(voc, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPLAB_URL_MIRROR", "http://127.0.0.1:9")  # closed, like HF_ENDPOINT
    for key, args in cases(voc, tmp_path).items():
        line = error_line(args)
        assert "cannot be reached" in line, (key, line)
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
        assert named <= options_of(key[0]), f"{key}: {line}"
        assert "use local weights in its place" in line


def test_the_checker_sees_an_option_a_command_lacks() -> None:
    assert "--init" in options_of("train") and "--model" not in options_of("train")
    assert "--model" in options_of("predict") and "--model" not in options_of("download")
    assert {"--workers", "--json"} <= options_of("data", "check")
