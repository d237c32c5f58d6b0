"""An exclusive, process-wide lock on a work directory (``fcntl.flock`` on ``workdir/.lock``).

The kernel drops a ``flock`` when its process ends, however it ends, so the lock file a
crashed run leaves behind does not block the next one. Nested acquisitions in one process
share one lock (``flock`` locks of two descriptors of one file conflict, even in a process).
A clean release removes the lock file, and the directory too when the lock created it and
nothing else was written there (a run refused before it started leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator

from pgcnn_jax.train._errors import WorkdirLocked

__all__ = ["LOCK_FILE", "lock_workdir"]

LOCK_FILE = ".lock"
_LOG = logging.getLogger(__name__)
_HELD: dict[str, list] = {}  # absolute path of the lock file -> [fd, depth, created dir]
_MUTEX = threading.Lock()


def _open_locked(path: str, workdir: str) -> int:
    """A descriptor of ``path`` holding its exclusive flock (retries when a releasing
    process removed the file between our open and our lock)."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                by = f" (pid {holder})" if holder.isdigit() else ""
                raise WorkdirLocked(
                    f"workdir {workdir!r} is in use by another process{by}: wait for it to "
                    "finish or use another --workdir"
                ) from None
            # A filesystem without flock (some network mounts): run unlocked, but say so.
            _LOG.warning("cannot lock workdir %r (%s): two runs in it would collide", workdir, err)
            return fd
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file that was just unlinked: take the new one
    raise WorkdirLocked(f"workdir {workdir!r}: cannot take its lock (it keeps being replaced)")


@contextlib.contextmanager
def lock_workdir(workdir: str | os.PathLike) -> Iterator[None]:
    """Holds the exclusive lock of ``workdir`` (created if needed) for the ``with`` block.

    Raises:
      WorkdirLocked: another process holds it; the message names ``workdir``.
    """
    workdir = os.fspath(workdir)
    path = os.path.abspath(os.path.join(workdir, LOCK_FILE))
    with _MUTEX:
        if path in _HELD:
            _HELD[path][1] += 1
        else:
            created = not os.path.isdir(workdir)
            os.makedirs(workdir, exist_ok=True)
            fd = _open_locked(path, workdir)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD[path] = [fd, 1, created]
    try:
        yield
    finally:
        with _MUTEX:
            entry = _HELD[path]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[path]
                with contextlib.suppress(OSError):
                    os.unlink(path)  # while still locked: a waiting opener retries
                os.close(entry[0])  # closing the last descriptor drops the flock
                if entry[2]:
                    with contextlib.suppress(OSError):
                        os.rmdir(workdir)  # only succeeds when nothing was written
