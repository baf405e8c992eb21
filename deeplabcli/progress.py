"""Progress bars, tables and side messages: the only module that imports rich.

Everything here writes to stderr, so stdout stays clean for results (``--json``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def stderr_console() -> Console:
    """A console on the current ``sys.stderr`` (looked up on each call so tests can capture)."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def message(text: str, *, quiet: bool = False) -> None:
    """One side message on stderr, printed as it is (paths and names may hold "[...]")."""
    if not quiet:
        stderr_console().print(text, markup=False)


class ProgressHandle:
    """What :func:`progress_bar` yields: call :meth:`advance` after each unit of work."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1, **fields: Any) -> None:
        """Move the bar by ``amount``; ``fields`` (e.g. ``loss=0.3``) show after the bar."""
        if self._progress is not None:
            status = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            if status:
                self._progress.update(self._task, advance=amount, status=status)
            else:
                self._progress.update(self._task, advance=amount)

    def set_total(self, total: float | None) -> None:
        """Give the bar its length once it is known (a bar started with ``None`` has none)."""
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def update(self, *, completed: float | None = None, **fields: Any) -> None:
        if self._progress is not None:
            status = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            kwargs: dict[str, Any] = {"status": status} if status else {}
            if completed is not None:
                kwargs["completed"] = completed
            self._progress.update(self._task, **kwargs)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextmanager
def progress_bar(
    total: int | None,
    description: str,
    *,
    disable: bool = False,
    unit: str = "it",
    completed: int = 0,
) -> Iterator[ProgressHandle]:
    """A progress bar on stderr with rate and ETA; ``disable=True`` yields a no-op handle.
    ``completed`` starts the bar part-way (a resumed run); rate and ETA count only new work.

    >>> with progress_bar(3, "demo", disable=True) as bar:
    ...     bar.advance()
    """
    if disable:
        yield ProgressHandle(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=stderr_console(), transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, status="")
        yield ProgressHandle(progress, task)


class _RateColumn(TextColumn):
    """Units per second, from rich's own speed estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task: Any) -> Any:  # type: ignore[override]
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"- {self.unit}/s")


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    justify: Sequence[str] | None = None,
) -> None:
    """A table on stderr; ``justify`` gives each column's alignment ("left"/"right")."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify=(justify[i] if justify else "left"))  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(Text(_fmt(v)) for v in row))  # Text: no markup in data
    stderr_console().print(table)
