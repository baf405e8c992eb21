"""Offline is fast and quiet: an unreachable Hub is one error line within seconds, a cached model
loads without asking the network, and huggingface_hub's retry lines never reach the user."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.hub import DEFAULT_REPO, bytes_of

from deeplabcli import load_model
from deeplabcli.cli import main
from deeplabcli.errors import DownloadError
from deeplabcli.weights.probe import endpoint_problem

HUB_CARD = "deeplabv3-mobilenetv2-voc"


@contextmanager
def silent_server() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a black-holed proxy)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@contextmanager
def failing_hub() -> Iterator[str]:
    """An endpoint that answers its root and fails every file with 503 (huggingface_hub retries
    those with back-off, logging a line per try)."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            self.send_response(200 if self.path == "/" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _reply

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def predict_with_hub_card(tmp_path: Path):
    start = time.perf_counter()
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path / "photo.jpg"), "--model", HUB_CARD, "-o", str(tmp_path / "m.png")]
    )  # fmt: skip
    return result, time.perf_counter() - start


def test_a_closed_port_fails_at_once_with_one_line(tmp_path: Path) -> None:
    result, seconds = predict_with_hub_card(tmp_path)  # conftest: HF_ENDPOINT is a closed port
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: cannot get model ")
    assert (
        f"config.json of Hub repo {DEFAULT_REPO}@main is not cached and the Hub at "
        "http://127.0.0.1:9 cannot be reached (Connection refused). Check the network"
    ) in result.stderr
    assert "Retrying" not in result.output
    assert seconds <= 3.0


def test_a_hub_that_never_answers_fails_within_the_probe_timeout(tmp_path, monkeypatch) -> None:
    with silent_server() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        result, seconds = predict_with_hub_card(tmp_path)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert f"the Hub at {endpoint} cannot be reached (no answer within 1.5 s)" in result.stderr
    assert 1.4 <= seconds <= 3.0


def test_the_probe_timeout_is_a_setting(monkeypatch) -> None:
    monkeypatch.setenv("DEEPLAB_HUB_TIMEOUT", "0.2")
    with silent_server() as endpoint:
        start = time.perf_counter()
        problem = endpoint_problem(endpoint)
        seconds = time.perf_counter() - start
    assert problem == "no answer within 0.2 s"
    assert seconds < 1.3  # the default, 1.5 s, would take longer (with room for a busy CPU)


def test_a_cached_model_loads_without_asking_the_network(server, transformers_model, monkeypatch):
    config_dict, state_dict = transformers_model
    server.add_repo(
        DEFAULT_REPO,
        {
            "config.json": json.dumps(config_dict).encode(),
            "pytorch_model.bin": bytes_of(state_dict),
        },
    )
    load_model(HUB_CARD)  # fills the cache
    asked = len(server.requests)
    load_model(HUB_CARD)
    assert len(server.requests) == asked  # the cache answered; the server was not asked
    monkeypatch.setenv("DEEPLAB_HUB_TIMEOUT", "5")
    with silent_server() as endpoint:  # a network that would hang every request
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        start = time.perf_counter()
        load_model(HUB_CARD)
        assert time.perf_counter() - start < 2.0


def test_huggingface_hubs_retry_lines_are_silenced(monkeypatch) -> None:
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # skip the back-off waits
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.addHandler(handler)
    try:
        with failing_hub() as endpoint:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
            with pytest.raises(DownloadError) as error:
                load_model("someone/flaky-model")
        assert str(error.value).startswith(
            "cannot get someone/flaky-model@main: config.json of Hub repo someone/flaky-model@main "
            f"is not cached and the Hub at {endpoint} cannot be reached. Check the network"
        )
        assert not [r for r in records if r.levelno < logging.ERROR], "retry lines leaked"
        hub_logger.warning("after the download")  # the logger works again afterwards
        assert records[-1].getMessage() == "after the download"
    finally:
        hub_logger.removeHandler(handler)
