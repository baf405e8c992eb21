"""Downloads: the only module that fetches files (:mod:`.probe` only asks whether a server
answers at all).

Hub files go through ``huggingface_hub.hf_hub_download`` (its cache, revisions and locks); URL
files (torchvision's) through a plain streaming HTTP download into the same cache tree. Settings
are read from the environment on every call, so they work even when set after import:

- ``HF_ENDPOINT``: the Hub (or a mirror) to ask, default https://huggingface.co;
- ``HF_HUB_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME``: where files are cached; URL downloads go
  to ``$HF_HOME/deeplabcli/urls/<host>/<path>``;
- ``HF_HUB_OFFLINE=1``: never touch the network, use cached files only;
- ``DEEPLAB_HUB_TIMEOUT``: seconds to wait for the Hub (or a URL's host) to answer at all
  (default 1.5) before a file that is not cached is reported as unreachable;
- ``DEEPLAB_URL_MIRROR``: a base URL that replaces the scheme and host of every card URL
  (``https://download.pytorch.org/models/x.pth`` → ``$DEEPLAB_URL_MIRROR/models/x.pth``), for
  mirrors and air-gapped installs. The cache key stays the original URL.

Every file is verified before anyone reads it: against the card's sha256/size where known,
against the sha256 prefix in a torchvision file name, and for Hub files against the Hub's own
content hash (an LFS file's ETag is its sha256; a small file's is its git blob sha1). A file
that fails is deleted from the cache and an :class:`IntegrityError` is raised.

Offline is fast and quiet: a Hub file already in the cache is used without asking the network
(``try_to_load_from_cache`` first), and before huggingface_hub is asked for a file that is not
cached, one bounded probe checks that the endpoint answers at all, so an unreachable Hub is one
error line after at most ``DEEPLAB_HUB_TIMEOUT`` seconds instead of huggingface_hub's retries
with back-off (whose log lines are silenced too).
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DownloadError, IntegrityError
from .integrity import hash_prefix_from_name, remember_digest, verify_file
from .probe import endpoint_problem, quiet_hub

URL_MIRROR_ENV = "DEEPLAB_URL_MIRROR"
_CHUNK = 1 << 20
_TRUE = {"1", "on", "yes", "true"}


# ---------------------------------------------------------------------------------- settings
def hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(os.environ.get("HF_HOME", default)).expanduser()


def hub_cache_dir() -> Path:
    """huggingface_hub's cache directory, as it would compute it now."""
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(os.environ.get("HF_HUB_CACHE") or legacy or hf_home() / "hub").expanduser()


def url_cache_path(url: str) -> Path:
    """Where the file at ``url`` is cached: ``$HF_HOME/deeplabcli/urls/<host>/<path>``."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s not in ("", ".", "..")]
    host = (parts.netloc or "local").replace(":", "_")  # host:port is not a Windows file name
    return hf_home().joinpath("deeplabcli", "urls", host, *segments)


def is_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def mirrored_url(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$DEEPLAB_URL_MIRROR`` when that is set."""
    mirror = os.environ.get(URL_MIRROR_ENV, "").rstrip("/")
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return mirror + parts.path + (f"?{parts.query}" if parts.query else "")


def _how_to_proceed() -> str:
    return (
        "Check the network, set HF_ENDPOINT (Hub) or DEEPLAB_URL_MIRROR (URLs) to a mirror, run "
        "`deeplab download NAME` on a connected machine and copy its cache (HF_HOME), "
        "or use local weights in its place (a checkpoint folder or a weights file)."
    )


# ---------------------------------------------------------------------------------- the Hub
def hub_download(
    repo_id: str,
    filename: str,
    *,
    revision: str = "main",
    what: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    missing_ok: bool = False,
    quiet: bool = False,
) -> Path | None:
    """Fetch ``filename`` from Hub repo ``repo_id`` at ``revision`` (cached) and verify it.

    Returns the local path, or None when ``missing_ok`` and the repo has no such file.
    ``quiet`` hides huggingface_hub's progress bar. A cached copy is used without asking the
    Hub, so a cached model loads with no network wait.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import (  # (also importable here in older huggingface_hub)
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = what or f"{repo_id}@{revision}"
    where = f"{filename} of Hub repo {repo_id}@{revision}"
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
    if isinstance(cached, str):
        return _verified(Path(cached), where, what, sha256, size)
    if missing_ok and cached is not None:
        return None  # the cache remembers that the repo has no such file
    problem = None if is_offline() else endpoint_problem(hub_endpoint())
    if problem:
        raise DownloadError(
            f"cannot get {what}: {where} is not cached and the Hub at {hub_endpoint()} cannot be "
            f"reached ({problem}). " + _how_to_proceed()
        )
    try:
        with _progress_bars(enabled=not quiet), quiet_hub():
            local = hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=hub_cache_dir(),
                endpoint=hub_endpoint(),
                local_files_only=is_offline(),
            )
    except RepositoryNotFoundError:
        raise DownloadError(
            f"Hub repo {repo_id} was not found at {hub_endpoint()} (it may be private or gated, "
            "or meant as a local path that does not exist). Check the name or path, log in with "
            "`hf auth login`, or run `deeplab models`."
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(
            f"Hub repo {repo_id} has no revision {revision!r}. Use a branch, tag or commit it has."
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if missing_ok and is_offline():
            return None
        state = (
            "offline mode is on (HF_HUB_OFFLINE)"
            if is_offline()
            else f"the Hub at {hub_endpoint()} cannot be reached"
        )
        raise DownloadError(
            f"cannot get {what}: {where} is not cached and {state}. " + _how_to_proceed()
        ) from None
    except EntryNotFoundError:  # its subclass LocalEntryNotFoundError is handled above
        if missing_ok:
            return None
        raise DownloadError(
            f"{where} does not exist. Check the file name or the revision."
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        if "Consistency check failed" in str(error):  # size differs from the Hub's
            raise IntegrityError(
                f"{where} (for {what}) arrived with the wrong size (corrupted or truncated "
                "download); nothing was kept. Run the command again, or check your mirror."
            ) from None
        raise DownloadError(
            f"downloading {where} for {what} failed ({_one_line(error)}). " + _how_to_proceed()
        ) from None
    return _verified(Path(local), where, what, sha256, size)


def _verified(path: Path, where: str, what: str, sha256: str | None, size: int | None) -> Path:
    """``path`` once it matches ``sha256``/``size`` and the Hub's own content hash (its blob
    name); a file that does not is deleted and an :class:`IntegrityError` raised."""
    blob = path.resolve().name
    verify_file(
        path,
        what=f"{where} (for {what})",
        sha256=sha256 or (blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None),
        size=size,
        git_sha1=blob if re.fullmatch(r"[0-9a-f]{40}", blob) else None,
    )
    return path


@contextmanager
def _progress_bars(*, enabled: bool) -> Iterator[None]:
    """Hide huggingface_hub's progress bars for the duration when not ``enabled``."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def hub_file_cached(repo_id: str, filename: str, revision: str = "main") -> bool:
    """Whether ``filename`` of ``repo_id@revision`` is in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
    return isinstance(found, str)


# ---------------------------------------------------------------------------------- URLs
def url_download(
    url: str,
    *,
    what: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    quiet: bool = False,
) -> Path:
    """Fetch ``url`` into the cache (once) and verify it; returns the cached path.

    The file streams into a temporary name beside its final place, is checked (Content-Length,
    ``sha256``/``size`` when given, the sha256 prefix in its name), then renamed. A cached copy
    is re-verified on every call.
    """
    what = what or url
    target = url_cache_path(url)
    checks = {"sha256": sha256, "size": size, "sha256_prefix": hash_prefix_from_name(url)}
    if target.is_file():
        verify_file(target, what=f"cached {url} (for {what})", **checks)
        return target
    if is_offline():
        raise DownloadError(
            f"cannot get {what}: {url} is not cached and offline mode is on (HF_HUB_OFFLINE). "
            + _how_to_proceed()
        )
    source = mirrored_url(url)
    parts = urllib.parse.urlsplit(source)
    problem = endpoint_problem(f"{parts.scheme}://{parts.netloc}")
    if problem:
        raise DownloadError(
            f"cannot get {what}: {url} is not cached and {parts.netloc} cannot be reached "
            f"({problem}). " + _how_to_proceed()
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.incomplete")
    try:
        _stream(source, partial, what=what, quiet=quiet)
        digest = verify_file(partial, what=f"{source} (for {what})", **checks)
        os.replace(partial, target)
        remember_digest(target, digest)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _stream(url: str, destination: Path, *, what: str, quiet: bool) -> None:
    """Copy ``url`` to ``destination``; a body shorter than its Content-Length is an error."""
    from ..progress import progress_bar

    request = urllib.request.Request(url, headers={"User-Agent": "deeplabcli"})
    expected: int | None = None
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            total = response.headers.get("Content-Length")
            expected = int(total) if total and total.isdigit() else None
            name = url.rsplit("/", 1)[-1]
            with (
                open(destination, "wb") as out,
                progress_bar(expected, f"download {name}", disable=quiet, unit="B") as bar,
            ):
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.advance(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"downloading {what} from {url} failed (HTTP {error.code} {error.reason}). "
            + _how_to_proceed()
        ) from None
    except http.client.IncompleteRead:
        pass  # reported as truncated below
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        raise DownloadError(
            f"downloading {what} from {url} failed ({_one_line(error)}). " + _how_to_proceed()
        ) from None
    if expected is not None and received != expected:
        destination.unlink(missing_ok=True)
        raise IntegrityError(
            f"{url} (for {what}) was truncated: got {received} of {expected} bytes; "
            "nothing was kept. Run the command again, or check your mirror."
        )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
