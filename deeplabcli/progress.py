"""Progress bars, tables and side messages: the only module that imports rich.

Everything here writes to stderr, so stdout stays clean for results (``--json``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
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
        _RemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=stderr_console(), transient=False) as progress:
        task = progress.add_task(
            description, total=total, completed=completed, status="", start_completed=completed
        )
        yield ProgressHandle(progress, task)


def throughput(task: Any) -> float | None:
    """Units per second of a rich task: the work done since its bar started over the time since
    it started (None before any). rich's own ``task.speed`` divides by the time between the first
    and the last update in its window instead, which is far too short when results arrive in
    bursts: a batch of 16 images reported at once read as thousands of images per second."""
    elapsed = task.finished_time if task.finished else task.elapsed
    done = task.completed - task.fields.get("start_completed", 0)
    return done / elapsed if elapsed and done > 0 else None


class _RateColumn(ProgressColumn):
    """Units per second: the real throughput (:func:`throughput`)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        rate = throughput(task)
        return Text(f"{rate:.2f} {self.unit}/s" if rate else f"- {self.unit}/s")


class _RemainingColumn(ProgressColumn):
    """Time left at the real throughput: ``m:ss`` (``-:--`` while unknown)."""

    def render(self, task: Any) -> Text:
        rate = throughput(task)
        if task.total is None or not rate:
            return Text("-:--:--")
        seconds = max(0, round((task.total - task.completed) / rate))
        return Text(f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}")


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    justify: Sequence[str] | None = None,
    whole: Sequence[int] = (),
    optional: Sequence[int] = (),
) -> None:
    """A table on stderr; ``justify`` gives each column's alignment ("left"/"right").

    Columns whose index is in ``whole`` (names people copy) are never cut or wrapped. When the
    table is wider than the terminal, the ``optional`` columns are left out, in that order,
    until it fits; what still does not fit wraps, long words folded rather than cut."""
    console = stderr_console()
    cells = [[_fmt(v) for v in row] for row in rows]
    shown = list(range(len(columns)))
    dropped = list(optional)
    while True:
        table = Table(title=title, title_justify="left")
        for i in shown:
            keep = i in whole
            table.add_column(
                columns[i],
                justify=(justify[i] if justify else "left"),  # type: ignore[arg-type]
                no_wrap=keep,
                overflow="ignore" if keep else "fold",
                min_width=max((len(row[i]) for row in cells), default=0) if keep else None,
            )
        for row in cells:
            table.add_row(*(Text(row[i]) for i in shown))  # Text: no markup in data
        natural = Measurement.get(console, console.options.update_width(1 << 16), table)
        wide = natural.maximum > console.width
        if not (wide and dropped):
            break
        shown.remove(dropped.pop(0))
    console.print(table)
