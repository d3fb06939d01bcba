"""One writer per run folder: an advisory lock (flock) on `<run>/.lock`.

A second trainer on the same folder fails at once, naming the PID that holds it. The
kernel releases a flock when its holder exits, however it exits, so a lock left by a
dead process never blocks the next run.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mlx_gpt.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.path.parent} is in use by another training run (PID {holder}); "
                "wait for it to finish, stop it, or choose another --out-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
