"""Crash-safe file replacement: a save either fully happens or leaves the previous file untouched.

The new bytes go to a temporary file beside the target (`.{name}.tmp-{pid}-{random}`), are flushed
and fsynced, then `os.replace` swaps it in and the directory is fsynced. A failure (the writer
raising, a full disk, a file-size limit) removes the temporary file. A process killed outright
(SIGKILL, power loss) cannot clean up, so each save first removes stale temporaries of the same
target left by processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable
from typing import IO

Writer = Callable[[IO[bytes]], object]


def temporary_name(path: str | os.PathLike) -> str:
    """A fresh temporary path for `path`: hidden, in the same directory, recognisable as ours."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # someone else's process, or a number no pid can be
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete temporaries of `path` whose writing process is gone; returns the paths removed.

    Temporaries of live processes are kept: another process may be saving the same file right now.
    """
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return []
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(rf"\.{re.escape(name)}\.tmp-(\d+)-[0-9a-f]{{8}}")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = pattern.fullmatch(entry.name)
            if (
                match
                and int(match.group(1)) != os.getpid()
                and not _process_exists(int(match.group(1)))
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed


@contextlib.contextmanager
def _file_size_limit_raises():
    """Exceeding RLIMIT_FSIZE sends SIGXFSZ, whose default action kills the process (the temporary
    file would stay behind). Ignored, the write fails with OSError(EFBIG) and we clean up."""
    sigxfsz = getattr(signal, "SIGXFSZ", None)
    if sigxfsz is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(sigxfsz, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(sigxfsz, previous)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable; some platforms cannot open a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, content: bytes | Writer) -> None:
    """Replace `path` with `content` (bytes, or a function writing to a binary file) all at once.

    On any exception the temporary file is removed, the exception propagates, and whatever was at
    `path` before is left exactly as it was.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file name", os.fspath(path))
    remove_stale_temporaries(target)
    temporary = temporary_name(target)
    # O_EXCL: never follow or clobber something already at the temporary name.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with _file_size_limit_raises():
        try:
            fd = os.open(temporary, flags, 0o666)
        except OSError as error:  # name the file asked for, not our hidden temporary
            raise type(error)(error.errno, error.strerror, os.fspath(path)) from None
        try:
            with os.fdopen(fd, "wb") as file:
                if callable(content):
                    content(file)
                else:
                    file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
    _fsync_directory(os.path.dirname(target))
