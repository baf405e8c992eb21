"""Stop requests from SIGINT (Ctrl-C) and SIGTERM: noted, so the loop can finish its step,
save, and exit with 128 + the signal number (130 / 143).

A second SIGINT while the run is saving aborts at once (KeyboardInterrupt); further SIGTERMs
(``torchrun`` sends one to every worker after a Ctrl-C) are ignored until the save is done.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager that records the first SIGINT/SIGTERM in :attr:`received`.

    Outside the main thread (where Python cannot install handlers) it records nothing.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
        elif signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def ignore_sigint(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a Ctrl-C reaches the whole process group, but only the
    main process decides when to stop; workers keep serving the current step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
