"""Messages, tables and bars: data printed as it is (brackets in paths are not rich markup),
and rates that are the real throughput."""

from __future__ import annotations

import io

import pytest

from deeplabcli.progress import message, print_table, progress_bar


def test_brackets_in_messages_and_tables_are_printed_as_they_are(capsys) -> None:
    message("wrote masks/[draft]/a.png and runs/[/x]")
    print_table("classes", ["name", "IoU"], [["[bold]cat[/bold]", 0.5]])
    err = capsys.readouterr().err
    assert "wrote masks/[draft]/a.png and runs/[/x]" in err
    assert "[bold]cat[/bold]" in err


def test_a_bar_started_without_a_length_shows_it_once_given(capsys) -> None:
    with progress_bar(None, "reading masks", unit="masks") as bar:
        bar.set_total(4)
        for _ in range(4):
            bar.advance()
    err = capsys.readouterr().err
    assert "4/4" in err and "4/?" not in err


def test_rates_are_the_real_throughput_when_results_arrive_in_bursts() -> None:
    """16 images finish together after 4 s of work: 4 img/s, not rich's 16 / (a few µs)."""
    from rich.console import Console
    from rich.progress import Progress

    from deeplabcli.progress import _RateColumn, _RemainingColumn, throughput

    now = [0.0]
    progress = Progress(console=Console(file=io.StringIO()), get_time=lambda: now[0])
    task_id = progress.add_task("predict", total=32, status="", start_completed=0)
    now[0] = 4.0
    for i in range(16):  # one batch of 16 results, reported within 16 µs
        now[0] = 4.0 + i * 1e-6
        progress.update(task_id, advance=1)
    task = progress.tasks[0]
    assert task.speed > 1e5  # what rich itself estimates
    assert throughput(task) == pytest.approx(4.0, rel=1e-3)
    assert _RateColumn("img").render(task).plain == "4.00 img/s"
    assert _RemainingColumn().render(task).plain == "0:00:04"  # 16 left at 4 img/s


def test_a_resumed_bar_counts_only_the_new_work() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from deeplabcli.progress import throughput

    now = [0.0]
    progress = Progress(console=Console(file=io.StringIO()), get_time=lambda: now[0])
    task_id = progress.add_task("train", total=100, completed=90, status="", start_completed=90)
    now[0] = 5.0
    progress.update(task_id, advance=5)
    assert throughput(progress.tasks[0]) == pytest.approx(1.0)


def test_long_values_wrap_instead_of_being_cut(capsys, monkeypatch) -> None:
    """The eval summary's model path at 80 columns: folded over lines, never cut with '…'."""
    monkeypatch.setenv("COLUMNS", "80")
    model = "/data/experiments/" + "very-long-directory-name/" * 4 + "checkpoint"
    print_table("Summary", ["metric", "value"], [("mIoU %", "75.10"), ("model", model)],
                justify=["left", "right"])  # fmt: skip
    err = capsys.readouterr().err
    assert "…" not in err and max(len(line) for line in err.splitlines()) <= 80
    cells = "".join(line.strip("│ ").split("│")[-1].strip() for line in err.splitlines()[4:-1])
    assert model in cells


def test_whole_columns_are_never_cut_and_optional_ones_give_way(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    names = ["deeplabv3-mobilenetv2-voc-8bit", "resnet50-imagenet"]
    print_table(None, ["name", "source", "cached"], [(n, "download.pytorch.org", "no") for n in names],
                whole=(0,), optional=(1,))  # fmt: skip
    err = capsys.readouterr().err
    assert "source" not in err and "download" not in err  # left out to make room
    for name in names:
        assert any(line.startswith(f"│ {name} ") for line in err.splitlines()), name
