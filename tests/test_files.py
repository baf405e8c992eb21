"""Atomic writes replace the target only when complete; image names are matched in any case;
a full disk is one error; stale temporaries are ours only; one writer holds a lock at a time."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.hashes import sha256

from deeplabcli.errors import DiskFullError, OutputWriteError
from deeplabcli.files import (
    atomic_file,
    check_writable,
    exclusive_lock,
    file_identity,
    is_disk_full,
    is_image_name,
    stale_temporaries,
    temporary_sibling,
    write_text_atomic,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "list.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]


def test_a_complete_write_replaces_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "list.txt"
    write_text_atomic(target, "new\n", mkdir=True)
    assert target.read_text() == "new\n"
    write_text_atomic(target, "newer\n")
    assert target.read_text() == "newer\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["list.txt"]


def test_image_names_in_any_case() -> None:
    assert is_image_name(Path("a/B.JPG")) and is_image_name(Path("c.webp"))
    assert not is_image_name(Path("notes.txt")) and not is_image_name(Path("mask"))


# ---------------------------------------------------------------------- a full disk
class SafetensorError(Exception):
    """What safetensors raises (not an OSError): it carries the OS message as text only."""


def test_a_full_disk_is_recognised_however_a_library_reports_it() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(SafetensorError("Error while serializing: I/O error: No space left on "
                                        "device (os error 28)"))  # fmt: skip
    try:  # torch's zip writer: a RuntimeError raised while handling the file's OSError
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904
    except RuntimeError as torch_error:
        assert is_disk_full(torch_error)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("unexpected pos 704 vs 598"))


def test_a_full_disk_while_writing_is_one_error_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "list.txt"
    target.write_text("old\n")
    before = sha256(target)

    def full(self, data, *args, **kwargs):
        Path.write_bytes(self, data.encode()[:3])  # half of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFullError) as caught:
        write_text_atomic(target, "new and longer\n")
    assert str(caught.value) == (
        f"no space left on device while writing {target}. Free space on that disk or choose "
        "another output location."
    )
    assert caught.value.__cause__ is None and caught.value.path == target
    assert sha256(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]  # no temporary left


def test_other_write_errors_pass_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), atomic_file(tmp_path / "x") as tmp:
        tmp.write_text("half")
        raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- stale temporaries
def test_stale_temporaries_are_ours_only(tmp_path: Path) -> None:
    ours = [".train_state.pt.1a2b3c4d.tmp", ".model.safetensors.00ff00ff.tmp"]
    theirs = [".train_state.pt.tmp", ".train_state.pt.1A2B3C4D.tmp", ".notes.txt.1a2b3c4d.tmp",
              "train_state.pt.1a2b3c4d.tmp", ".train_state.pt.1a2b3c4.tmp", "train_state.pt"]  # fmt: skip
    for name in ours + theirs:
        (tmp_path / name).write_text(name)
    found = stale_temporaries(tmp_path, {"train_state.pt", "model.safetensors"})
    assert found == sorted(tmp_path / name for name in ours)
    assert temporary_sibling(tmp_path / "train_state.pt").name != ours[0]  # fresh each time
    assert stale_temporaries(tmp_path / "missing", {"train_state.pt"}) == []


# ---------------------------------------------------------------------- outputs vs inputs
def test_file_identity_sees_through_links_and_spellings(tmp_path: Path) -> None:
    photo = tmp_path / "q" / "x.png"
    photo.parent.mkdir()
    photo.write_bytes(b"photo")
    (tmp_path / "link.png").symlink_to(photo)
    os.link(photo, tmp_path / "hard.png")
    same = [photo, tmp_path / "q" / ".." / "q" / "x.png", tmp_path / "link.png",
            tmp_path / "hard.png"]  # fmt: skip
    assert {file_identity(p) for p in same} == {file_identity(photo)} != {None}
    assert file_identity(tmp_path / "q" / "other.png") is None


def test_check_writable_refuses_before_anything_is_written(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper", "Choose another --out")
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputWriteError) as caught:
        check_writable(blocker / "run", "Choose another --out")
    assert str(caught.value) == (
        f"cannot write to {blocker / 'run'} (it is under the file {blocker}). Choose another --out."
    )
    with pytest.raises(OutputWriteError) as caught:
        check_writable(blocker, "Choose another --out")
    assert str(caught.value) == f"cannot write to {blocker} (it is a file). Choose another --out."
    if Path("/proc/self").is_dir():  # Linux: a folder no one can create files in
        with pytest.raises(OutputWriteError) as caught:
            check_writable(Path("/proc/nope"), "Give --report a writable folder")
        assert str(caught.value) == (
            "cannot write to /proc/nope (this folder does not accept new files). "
            "Give --report a writable folder."
        )


# ---------------------------------------------------------------------- one writer at a time
HOLD = """
import sys, time
from pathlib import Path
from deeplabcli.files import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), lambda pid: RuntimeError(pid)):
    print("locked", flush=True)
    time.sleep(600)
"""


def busy(pid: int | None) -> RuntimeError:
    return RuntimeError(f"held by {pid}")


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl.flock is POSIX")
def test_the_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    lock = tmp_path / ".train.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        with (
            pytest.raises(RuntimeError, match=rf"^held by {holder.pid}$"),
            exclusive_lock(lock, busy),
        ):
            pass
        assert lock.read_text() == f"{holder.pid}\n"
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs
        holder.wait()
    assert lock.read_text() == f"{holder.pid}\n"  # a stale file, but no stale lock
    with exclusive_lock(lock, busy):
        assert lock.read_text() == f"{os.getpid()}\n"
        again = pytest.raises(RuntimeError, match=rf"^held by {os.getpid()}$")
        with again, exclusive_lock(lock, busy):  # a second holder in this process too
            pass
    assert not lock.exists()  # removed when released


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_files_get_the_permissions_the_umask_gives(tmp_path: Path, umask, mode) -> None:
    import stat

    from deeplabcli.files import atomic_file, new_file_mode, process_umask

    previous = os.umask(umask)
    try:
        assert process_umask() == umask and new_file_mode(directory=True) == 0o777 & ~umask
        target = tmp_path / "weights.bin"
        with atomic_file(target) as tmp:  # a writer that makes its file private, as safetensors
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))
        assert stat.S_IMODE(target.stat().st_mode) == mode == new_file_mode()
    finally:
        os.umask(previous)
