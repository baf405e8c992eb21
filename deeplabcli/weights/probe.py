"""Is the Hub there at all? One bounded probe before huggingface_hub is asked for a file.

huggingface_hub retries a connection that fails five times with back-off (about 25 s, one log
line per try) before it gives up. :func:`endpoint_problem` asks the endpoint once, with a time limit
that covers name resolution too, so that an unreachable Hub is reported at once; huggingface_hub
is only asked once the endpoint has answered (and :func:`quiet_hub` keeps its retry lines off the
terminal even then). ``DEEPLAB_HUB_TIMEOUT`` sets the limit in seconds (default 1.5).
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

HUB_TIMEOUT_ENV = "DEEPLAB_HUB_TIMEOUT"
_DEFAULT_TIMEOUT_S = 1.5
_ANSWERED: set[str] = set()  # endpoints that answered in this process


def hub_timeout() -> float:
    """Seconds to wait for the Hub to answer the probe (``$DEEPLAB_HUB_TIMEOUT``, default 1.5)."""
    try:
        return max(0.1, float(os.environ.get(HUB_TIMEOUT_ENV, _DEFAULT_TIMEOUT_S)))
    except ValueError:
        return _DEFAULT_TIMEOUT_S


def endpoint_problem(endpoint: str, timeout: float | None = None) -> str | None:
    """None when ``endpoint`` answers an HTTP request (any status, through the environment's
    proxies) within ``timeout`` seconds (default :func:`hub_timeout`), name resolution included;
    else what went wrong, e.g. ``"no answer within 1.5 s"``. Answers are remembered per process."""
    if endpoint in _ANSWERED:
        return None
    timeout = hub_timeout() if timeout is None else timeout
    outcome: list[str | None] = []

    def probe() -> None:
        request = urllib.request.Request(endpoint + "/", method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # an error status is an answer
        except urllib.error.URLError as error:
            reason = error.reason
            outcome.append(getattr(reason, "strerror", None) or str(reason))
        except (OSError, ValueError, http.client.HTTPException) as error:
            outcome.append(getattr(error, "strerror", None) or type(error).__name__)

    thread = threading.Thread(target=probe, name="deeplab-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome or (outcome[0] or "").lower() in ("timed out", "timeout"):
        return f"no answer within {timeout:g} s"
    if outcome[0] is None:
        _ANSWERED.add(endpoint)
    return outcome[0]


@contextmanager
def quiet_hub() -> Iterator[None]:
    """Keep huggingface_hub's retry and back-off log lines off the terminal while a file is
    fetched: the one error that may follow says what went wrong."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
