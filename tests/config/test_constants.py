"""Defaults that follow the machine: data-loading workers never outnumber the CPUs."""

from __future__ import annotations

import os
import warnings

import pytest
from click.testing import CliRunner
from torch.utils.data import DataLoader

from deeplabcli.cli import main
from deeplabcli.config import EvalConfig, TrainConfig
from deeplabcli.config.constants import available_cpus, default_workers


@pytest.mark.parametrize(("cpus", "train", "evaluate"), [(1, 1, 1), (2, 2, 2), (16, 4, 2)])
def test_worker_defaults_follow_the_cpus_this_process_may_use(monkeypatch, cpus, train, evaluate):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert available_cpus() == cpus
    assert (TrainConfig().workers, EvalConfig().workers) == (train, evaluate)
    assert default_workers() == train and default_workers(2) == evaluate
    assert TrainConfig(workers=3).workers == 3  # an explicit value is kept


def test_without_an_affinity_mask_the_cpu_count_counts(monkeypatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert available_cpus() == 3 and default_workers() == 3


def test_torch_does_not_warn_about_the_default_on_a_two_core_machine(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def warnings_for(workers: int) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            DataLoader(list(range(8)), num_workers=workers).check_worker_number_rationality()
        return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]

    assert warnings_for(TrainConfig().workers) == []
    assert any("4 worker processes" in m for m in warnings_for(4))  # the old default did warn


def test_cli_help_says_where_the_worker_defaults_come_from() -> None:
    for command, text in (("train", "at most 4"), ("bootstrap", "at most 4"),
                          (("data", "check"), "at most 4"), ("eval", "at most 2")):  # fmt: skip
        args = [*command, "-h"] if isinstance(command, tuple) else [command, "-h"]
        result = CliRunner().invoke(main, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert f"[default: (the CPUs available, {text})" in " ".join(result.output.split())
