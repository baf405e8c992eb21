"""Messages and tables print data as it is: brackets in paths or names are not rich markup."""

from __future__ import annotations

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
