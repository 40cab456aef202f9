"""Exclusive locks on open files, held until released or until the holder exits or dies.

Where ``fcntl`` exists (Linux, macOS, the BSDs) the lock is a whole-file ``flock``, as before.
Elsewhere (Windows) it is ``msvcrt.locking`` on one byte far past any data the library writes
(:data:`REGION`), so the file's content, such as the holder's PID, stays readable while it is
held. Either way the operating system releases the lock when the file is closed or the process
ends, so a killed holder never leaves a stale lock; two open files of one process exclude each
other as two processes do.
"""

from __future__ import annotations

import errno
import os
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

#: ``os.O_NOFOLLOW`` where the platform has it (refuse to open a lock file through a symlink);
#: 0 on Windows, which has no such flag.
NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
#: The byte offset of the region ``msvcrt.locking`` locks.
REGION = 1 << 30
_POLL_SECONDS = 0.05


def lock(fd: int, *, blocking: bool = True) -> None:
    """Take the exclusive lock on the open file ``fd`` (opened for writing).

    Args:
        blocking: wait while another holder has it; if False, fail at once instead.

    Raises:
        BlockingIOError: ``blocking`` is False and the lock is held elsewhere (``errno`` EAGAIN
            from ``flock``; ``msvcrt`` reports EACCES, raised as the same type).
    """
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return
    while True:
        try:
            _region(fd, msvcrt.LK_NBLCK)
            return
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EDEADLK):
                raise
            if not blocking:
                raise BlockingIOError(errno.EACCES, "the lock is held by another open file") from err
        time.sleep(_POLL_SECONDS)


def unlock(fd: int) -> None:
    """Release the lock that :func:`lock` took on ``fd``."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        _region(fd, msvcrt.LK_UNLCK)


def _region(fd: int, mode: int) -> None:
    """``msvcrt.locking`` of the byte at :data:`REGION`, leaving the file position as it was."""
    position = os.lseek(fd, 0, os.SEEK_CUR)
    os.lseek(fd, REGION, os.SEEK_SET)
    try:
        msvcrt.locking(fd, mode, 1)
    finally:
        os.lseek(fd, position, os.SEEK_SET)
