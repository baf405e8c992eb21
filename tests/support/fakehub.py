"""A local stand-in for the Hugging Face Hub and for plain download URLs, for tests.

It answers what ``huggingface_hub.hf_hub_download`` asks (``HEAD``/``GET
/<owner>/<name>/resolve/<revision>/<file>``) with the headers the client checks:
``X-Repo-Commit``, ``ETag`` (an LFS file's sha256, else the git blob sha1), ``X-Linked-Etag`` /
``X-Linked-Size`` for LFS files, ``Content-Length``, and ``X-Error-Code`` on 404s. It never sends
``X-Xet-*`` headers, so the client takes its plain HTTP path. ``GET /files/<path>`` serves plain
URL downloads. Files can be served corrupted (same size, other bytes) or truncated.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".bin", ".safetensors", ".pth", ".pt", ".tflite")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def corrupted(data: bytes) -> bytes:
    """The same number of bytes with some of them flipped."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


class FakeServer:
    """``with FakeServer() as server:`` runs on 127.0.0.1 at a free port in a thread."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo → commit → file → bytes
        self.refs: dict[str, dict[str, str]] = {}  # repo → branch → commit
        self.urls: dict[str, bytes] = {}  # path under /files/ → bytes
        self.corrupt: set[str] = set()  # "repo/file" or "/files/<path>" served corrupted
        self.truncate: set[str] = set()  # "/files/<path>" cut short of its Content-Length;
        # "repo/file" sent shorter than the size its HEAD announced
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- content
    def add_repo(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Publish ``files`` as a new commit of ``repo_id`` on ``branch``; returns the commit."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        commit = digest.hexdigest()
        self.repos.setdefault(repo_id, {})[commit] = dict(files)
        self.refs.setdefault(repo_id, {})[branch] = commit
        return commit

    def add_url(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``/files/<path>``; returns the full URL."""
        self.urls[path.lstrip("/")] = data
        return f"{self.endpoint}/files/{path.lstrip('/')}"

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FakeServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- answering
    def answer(self, method: str, raw_path: str) -> tuple[int, dict[str, str], bytes, int | None]:
        """(status, headers, body, bytes to actually send or None for all) for a request."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        self.requests.append((method, path))
        if path.startswith("/files/"):
            key = path[len("/files/") :]
            if key not in self.urls:
                return 404, {}, b"not found", None
            data = self.urls[key]
            body = corrupted(data) if path in self.corrupt else data
            limit = len(data) // 2 if path in self.truncate else None
            return 200, {"Content-Length": str(len(data))}, body, limit
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound"}, b"", None
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo_id not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, b"", None
        commit = self.refs[repo_id].get(revision, revision)
        if commit not in self.repos[repo_id]:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b"", None
        files = self.repos[repo_id][commit]
        if filename not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"", None
        data = files[filename]
        headers = {"X-Repo-Commit": commit, "Content-Length": str(len(data))}
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"'})
            headers["X-Linked-Size"] = str(len(data))
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        key = f"{repo_id}/{filename}"
        body = corrupted(data) if key in self.corrupt else data
        if key in self.truncate and method == "GET":  # a short body that says it is complete
            body = data[: len(data) // 2]
            headers["Content-Length"] = str(len(body))
        return 200, headers, body, None


def _handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _respond(self, send_body: bool) -> None:
            status, headers, body, limit = fake.answer(self.command, self.path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body if limit is None else body[:limit])
                if limit is not None:
                    self.close_connection = True

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def log_message(self, format: str, *args: object) -> None:  # silence stderr
            pass

    return Handler
